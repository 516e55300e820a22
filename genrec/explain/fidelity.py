"""How faithfully a RecExplainer imitates its target recommender (RecExplainer's alignment metrics).

For each evaluation user (never trained on), on the same examples in every mode:

* ``next_hit@5``: the target's top-1 item is among the explainer's 5 beams of trie-constrained
  generation over all item names (:func:`name_trie`; items with identical names count as one);
* ``rank_ndcg@5``: the 5 items of the ``rank`` task ordered by the likelihood of each being named
  first; NDCG@5 with linear gains from the target's order (its best item gain 5, its worst 1);
* ``interest_accuracy``: one "Yes" and one "No" example per user, answered by comparing the
  likelihoods of " Yes" and " No";
* ``fidelity``: the mean of the three (the model-selection metric).

Prompts and answers are rendered by :class:`genrec.explain.tasks.AlignmentTasks` in the explainer's mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from genrec.data import ItemCatalog
from genrec.decoding import PrefixTrie
from genrec.explain.model import RecExplainer
from genrec.explain.tasks import AlignmentTasks
from genrec.knowledge.providers import item_name
from genrec.progress import progress

__all__ = ["fidelity", "name_trie", "ndcg_of_order"]


def name_trie(model: RecExplainer, catalog: ItemCatalog) -> PrefixTrie:
    """Trie of every item's answer tokens (``" " + name`` + end token); an identical name keeps its first item."""
    sequences, values, seen = [], [], set()
    for item in range(1, len(catalog.item_ids)):
        tokens = tuple(model.encode(" " + item_name(catalog, item)) + [model.tokenizer.eos_token_id])
        if tokens not in seen:
            seen.add(tokens)
            sequences.append(list(tokens))
            values.append(item)
    return PrefixTrie(sequences, values)


def ndcg_of_order(order: Sequence[int], truth: Sequence[int]) -> float:
    """NDCG of ``order`` (items) against the true order ``truth`` (best first), gains n, n-1, ..., 1."""
    gain = {item: len(truth) - r for r, item in enumerate(truth)}
    discounts = 1 / np.log2(np.arange(len(truth)) + 2)
    ideal = float(np.dot(sorted(gain.values(), reverse=True), discounts))
    return float(np.dot([gain[i] for i in order], discounts[:len(order)]) / ideal)


def fidelity(model: RecExplainer, tasks: AlignmentTasks, users: Sequence[int], trie: PrefixTrie,
             seed: int = 0, batch_size: int = 8) -> dict[str, float]:
    """The metrics of the module docstring over ``users`` (the explainer's mode must be ``tasks.mode``)."""
    if model.mode != tasks.mode:
        raise ValueError(f"the explainer is in {model.mode!r} mode but the tasks render {tasks.mode!r} prompts")
    rng = np.random.default_rng(seed)
    catalog = tasks.catalog
    hits, ndcgs, correct = [], [], []
    users = list(users)
    for start in progress(range(0, len(users), batch_size), desc="explainer fidelity", unit="batch"):
        batch = [tasks.next_item(u) for u in users[start:start + batch_size]]
        beams = model.generate_items([model.encode(e.prompt) for e in batch], trie, 5,
                                     _cat([e.user_vectors for e in batch]), _cat([e.item_vectors for e in batch]))
        for example, row in zip(batch, beams.tolist()):
            target = item_name(catalog, example.items[0])
            hits.append(any(i > 0 and item_name(catalog, i) == target for i in row))
    for user in progress(users, desc="explainer rank/interest", unit="user"):
        example = tasks.rank(user, rng)
        truth = example.truth
        conts = [model.encode("\n" + item_name(catalog, i)) for i in example.items]
        scores = model.continuation_scores(model.encode(example.prompt), conts, example.user_vectors,
                                           example.item_vectors).numpy()
        ndcgs.append(ndcg_of_order([example.items[j] for j in np.argsort(-scores, kind="stable")], truth))
        for positive in (True, False):
            case = tasks.interest(user, positive, rng)
            yes, no = model.continuation_scores(model.encode(case.prompt), [model.encode(" Yes"), model.encode(" No")],
                                                case.user_vectors, case.item_vectors).tolist()
            correct.append((yes > no) == positive)
    out = {"next_hit@5": float(np.mean(hits)), "rank_ndcg@5": float(np.mean(ndcgs)),
           "interest_accuracy": float(np.mean(correct))}
    out["fidelity"] = float(np.mean(list(out.values())))
    return out



def _cat(vectors):
    return torch.cat(vectors) if vectors else None
