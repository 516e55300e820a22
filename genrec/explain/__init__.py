"""RecExplainer (RecAI): an LLM aligned to a trained genrec recommender as its surrogate, to explain it.

:class:`RecExplainer` (behaviour / intention / hybrid mode, placeholder soft tokens shared with CLLM4Rec),
:class:`AlignmentTasks` (the target's next item, ranking, interest, item recovery, history),
:func:`fidelity` (hit@5 of the target's top-1, ranking NDCG@5, interest accuracy), the target SASRec.
"""

from genrec.explain.fidelity import fidelity, name_trie
from genrec.explain.model import MODES, RecExplainer
from genrec.explain.target import item_vectors, trained_sasrec, user_vectors
from genrec.explain.tasks import TASKS, AlignmentTasks, Example

__all__ = ["MODES", "TASKS", "AlignmentTasks", "Example", "RecExplainer", "fidelity", "item_vectors", "name_trie",
           "trained_sasrec", "user_vectors"]
