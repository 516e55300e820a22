"""RecLM-emb's bi-encoder: one text encoder for queries and item texts, trained with InfoNCE.

A query q and an item text p are encoded by the same Hugging Face encoder (any folder or hub id
``AutoModel`` loads; the bundled all-MiniLM-L6-v2 by default), pooled (``mean`` over the attention
mask, as sentence-transformers and E5; ``cls``, as BGE; or ``last``, the last real token, as
RepLLaMA) and L2-normalised. The loss of a batch of B queries, each with one positive and n sampled
negatives, is InfoNCE over every passage of the batch (the other queries' positives and negatives
are in-batch negatives), as FlagEmbedding / RecLM-emb train it::

    loss = CE(q_b . p_j / temperature over j = 1..B (1 + n), label = positive of b)

A passage that is the same item as a query's positive (a duplicate in the batch) is masked out of
that query's negatives, so no query is pushed away from its own answer.

Saved as a folder: the encoder and tokenizer (``save_pretrained``) plus ``retrieval.json`` with the
pooling, temperature and maximum lengths, so :meth:`RetrievalEncoder.from_pretrained` rebuilds it
without gin. Shapes: B queries, P passages, L tokens, D width.
"""

from __future__ import annotations

import json
from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.io import atomic_write_text
from genrec.llm.pretrained import resolve_llm
from genrec.progress import progress

__all__ = ["POOLINGS", "RetrievalEncoder"]

POOLINGS = ("mean", "cls", "last")
SETTINGS_FILE = "retrieval.json"


@gin.configurable
class RetrievalEncoder(nn.Module):
    """A shared-weight text bi-encoder for query -> item retrieval.

    Args:
        model: ``bundled:<name>``, an encoder folder (or one written by :meth:`save_pretrained`), or a hub id.
        pooling: one of :data:`POOLINGS`.
        temperature: InfoNCE temperature (RecLM-emb: 0.01 for E5-large; 0.05 suits MiniLM).
        query_max_length, passage_max_length: tokens kept per query / item text.
    """

    def __init__(self, model: str = "bundled:all-minilm-l6-v2", pooling: str = "mean", temperature: float = 0.05,
                 query_max_length: int = 128, passage_max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"RetrievalEncoder.pooling = {pooling!r} cannot work; use one of {', '.join(POOLINGS)}")
        if not temperature > 0:
            raise ValueError(f"RetrievalEncoder.temperature = {temperature!r} cannot work; it must be > 0")
        source = resolve_llm(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.encoder = AutoModel.from_pretrained(source)
        except OSError as err:
            raise OSError(f"could not load the text encoder {model!r} ({err}); use a bundled model "
                          "('bundled:all-minilm-l6-v2'), an encoder folder, or a hub id with network access") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model_spec, self.pooling, self.temperature = model, pooling, float(temperature)
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> RetrievalEncoder:
        """The encoder saved in ``folder`` by :meth:`save_pretrained` (a plain encoder folder: defaults)."""
        folder = Path(folder)
        settings_path = folder / SETTINGS_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        settings.pop("base_model", None)
        return cls(model=str(folder), **settings)

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes the encoder, tokenizer and ``retrieval.json`` (written last: a folder without it is incomplete)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        atomic_write_text(folder / SETTINGS_FILE, json.dumps({
            "pooling": self.pooling, "temperature": self.temperature, "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length, "base_model": self.model_spec}, indent=2) + "\n")

    def tokenize(self, texts: list[str], query: bool) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                              max_length=self.query_max_length if query else self.passage_max_length)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled vectors [B, D] of a tokenized batch [B, L]."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            last = attention_mask.sum(1).clamp(min=1) - 1
            pooled = hidden[torch.arange(len(hidden), device=hidden.device), last]
        return F.normalize(pooled, dim=-1)

    def forward(self, query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask,
                passage_items, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores [B, P] of every query against every passage of the batch, and the InfoNCE loss.

        Args:
            query_*: tokenized queries [B, Lq]; passage_*: tokenized item texts [P, Lp].
            passage_items: LongTensor [P], the item of each passage.
            labels: LongTensor [B], the column of each query's positive passage.
        """
        queries = self.embed(query_input_ids, query_attention_mask)
        passages = self.embed(passage_input_ids, passage_attention_mask)
        scores = queries @ passages.T / self.temperature
        positive_items = passage_items[labels]  # [B]
        duplicate = passage_items[None, :] == positive_items[:, None]
        duplicate[torch.arange(len(labels), device=labels.device), labels] = False
        scores = scores.masked_fill(duplicate, float("-inf"))
        return scores, F.cross_entropy(scores, labels)

    @torch.inference_mode()
    def encode(self, texts: list[str], query: bool = False, batch_size: int = 64, desc: str = "") -> np.ndarray:
        """Float32 [len(texts), D] normalised vectors, in batches sorted by length (little padding)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.encoder.config.hidden_size), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in progress(starts, desc=desc or f"encoding {len(texts)} texts", unit="batch",
                              disable=len(starts) < 4):
            rows = order[start:start + batch_size]
            batch = self.tokenize([texts[i] for i in rows], query).to(device)
            out[rows] = self.embed(batch["input_ids"], batch["attention_mask"]).cpu().numpy()
        self.train(was_training)
        return out
