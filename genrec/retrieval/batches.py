"""Training batches of RecLM-emb: queries with their positive and sampled negative item texts.

:class:`QueryDataset` serves one training :class:`~genrec.retrieval.queries.Query` per index;
:class:`QueryCollator` tokenizes a batch of them into the keyword arguments of
:meth:`RetrievalEncoder.forward <genrec.retrieval.encoder.RetrievalEncoder.forward>`: the B queries,
then the passages [positive of query 0 .. positive of query B-1, negatives of query 0, ...], so the
label of query b is column b and every other passage of the batch is an in-batch negative.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from genrec.retrieval.queries import Query

__all__ = ["QueryCollator", "QueryDataset"]


class QueryDataset(Dataset):
    """Training queries, each with its answer (``answers[0]``) and negatives."""

    def __init__(self, queries: list[Query]):
        missing = [q for q in queries if not q.negatives]
        if not queries or missing:
            raise ValueError("QueryDataset needs training queries with sampled negatives "
                             "(QueryGenerator.queries('train'))")
        self.queries = queries

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> Query:
        return self.queries[index]


class QueryCollator:
    """Tokenizes a list of queries and their passages with the encoder's tokenizer and lengths.

    Args:
        encoder: a :class:`~genrec.retrieval.encoder.RetrievalEncoder` (its ``tokenize``).
        item_texts: text of item i at position i (position 0 unused).
    """

    def __init__(self, encoder, item_texts: list[str]):
        self.encoder, self.item_texts = encoder, item_texts

    def __call__(self, queries: list[Query]) -> dict[str, torch.Tensor]:
        items = [q.answers[0] for q in queries] + [n for q in queries for n in q.negatives]
        query = self.encoder.tokenize([q.text for q in queries], query=True)
        passage = self.encoder.tokenize([self.item_texts[i] for i in items], query=False)
        return {"query_input_ids": query["input_ids"], "query_attention_mask": query["attention_mask"],
                "passage_input_ids": passage["input_ids"], "passage_attention_mask": passage["attention_mask"],
                "passage_items": torch.tensor(items), "labels": torch.arange(len(queries))}
