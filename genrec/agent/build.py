"""Assembling an agent from names: the dataset, a ranker folder, a retrieval encoder, a planner.

* ranker: ``popularity`` (:class:`~genrec.models.MostPopular` on the training sequences) or a saved
  model folder (``<run dir>/model`` of the SASRec or HSTU trainer); any
  :class:`~genrec.models.base.Recommender` object works in :class:`~genrec.agent.tools.ToolBox` directly.
* retriever: a retrieval trainer's ``<run dir>/model`` (RecLM-emb) or an encoder spec used frozen
  (``bundled:all-minilm-l6-v2``: the semantic-ID embedder's model); ``none``: no soft filters.
* planner: ``rules`` or ``llm`` (the bundled SmolLM2 by default, or any causal LM spec).
"""

from __future__ import annotations

from pathlib import Path

from genrec.agent.items import ItemTable
from genrec.agent.planner import LLMPlanner, RulePlanner
from genrec.agent.tools import ToolBox

__all__ = ["load_ranker", "make_planner", "make_toolbox"]


def load_ranker(spec: str, interactions, train_sequences):
    """A Recommender whose item indices match ``interactions`` (see the module docstring)."""
    from genrec.models import MostPopular

    if spec == "popularity":
        return MostPopular(train_sequences, interactions.num_items)
    folder = Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"ranker {spec!r} is neither 'popularity' nor a saved model folder; train SASRec with "
                                "python genrec/trainers/sasrec_trainer.py config/sasrec/ml100k_debug.gin and pass "
                                "<run dir>/model")
    from genrec.models.hstu import HSTU
    from genrec.models.sasrec import SASRec

    for cls in (SASRec, HSTU):
        if (folder / cls.weights_file).is_file():
            model = cls.from_pretrained(folder)
            if list(model.item_ids) != list(interactions.item_ids):
                raise ValueError(f"the ranker in {folder} was trained on other item ids than {interactions.name}")
            return model
    raise FileNotFoundError(f"{folder} holds no saved SASRec or HSTU model")


def make_toolbox(catalog, ranker=None, retriever: str = "none", soft_keep: int = 50) -> ToolBox:
    table = ItemTable(catalog)
    item_retriever = None
    if retriever != "none":
        from genrec.retrieval.service import ItemRetriever, load_encoder

        item_retriever = ItemRetriever(load_encoder(retriever), catalog)
    return ToolBox(table, ranker=ranker, retriever=item_retriever, soft_keep=soft_keep)


def make_planner(kind: str, tools: ToolBox, llm: str = "bundled:smollm2-135m-instruct"):
    if kind == "rules":
        return RulePlanner(tools.specs())
    if kind != "llm":
        raise ValueError(f"unknown planner {kind!r}; use 'rules' or 'llm'")
    from genrec.llm.pretrained import load_causal_lm

    model, tokenizer = load_causal_lm(llm)
    return LLMPlanner(model, tokenizer, tools.specs())
