"""ContentRecommender: content operator x behavior operator x click predictor, trained end to end.

Legommenders (Liu et al., WWW 2025, arXiv 2412.15973) composes a recommender from three parts chosen
by name: a content operator (item text -> item vector), a behavior operator (history of item
vectors -> user vector) and a click predictor (user, item -> score). Gradients reach the text
encoder, so it learns from behaviour. Parts are chosen in gin by ``@`` reference or by registry
name (:data:`CONTENT_OPERATORS`, :data:`BEHAVIOR_OPERATORS`, :data:`PREDICTORS`)::

    ContentRecommender.item_encoder = @AttentionContent      # or "attention"
    ContentRecommender.user_encoder = @TransformerBehavior   # or "transformer"
    ContentRecommender.predictor = @DotPredictor             # or "dot"

**Training** (``forward``): each example (:func:`genrec.data.windows.history_examples`) is a history
(the ``max_history`` most recent items before a target, right-padded) and its target.
``num_negatives`` K items are drawn uniformly per example (redrawn if equal to the target), or, when
the batch carries a ``negative_pool`` (MIND: the non-clicked news of the click's impression,
:class:`genrec.data.mind_small.ImpressionExamples`), from that pool (:meth:`impression_negatives`). Every
distinct item in the batch is encoded once. Losses:
``softmax`` (the positive against its K negatives, cross-entropy; Legommenders' "matching" mode) or
``bce`` (pointwise binary cross-entropy, positive 1 and each negative 0; its "ranking" mode).

**Evaluation cache** (``score`` with ``eval_cache = True``): the first call after the weights change
encodes every item once, in batches of similar text length (so little padding is computed), under
``torch.no_grad`` in eval mode -> a table [N + 1, D]; user
vectors come from that table, and every item is scored from it. The table is keyed by the version
counter, identity and storage of every parameter and buffer: an optimizer step, ``load_state_dict``
or any in-place update bumps a counter, so the table is never stale. It is also dropped whenever
the model enters training mode. Writing through ``.data`` bypasses version counters; call
:meth:`invalidate_cache` after such a write. With ``eval_cache = False`` every batch of users
re-encodes its users' history items (no sharing between users) and the whole catalogue as
candidates, and a language-model operator recomputes its frozen layers: a naive implementation.

**Impressions** (``score_candidates``): each row's own candidates are scored from its history, with
the evaluation cache when it is on; an empty history (a MIND user without clicks) is one padding
item, whose vector is zero.

**Saving**: ``save_pretrained(folder)`` writes the weights (item texts and raw ids as metadata) and
the operative gin config that built the model (its operators and their settings); ``from_pretrained``
rebuilds the model under that config, in a gin configuration of its own, and loads the weights.

Shapes: B batch, H history length, K negatives, C candidates, N items, D width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F

from genrec.config import isolated_config
from genrec.data.padding import right_pad
from genrec.io import atomic_write_text
from genrec.models.base import Recommender
from genrec.models.content.behavior_ops import (AdditiveBehavior, BehaviorOperator, FastformerBehavior, GRUBehavior,
                                                MeanBehavior, TransformerBehavior)
from genrec.models.content.content_ops import AttentionContent, CNNContent, ContentOperator, FastformerContent
from genrec.models.content.lm import PretrainedLMContent
from genrec.models.content.predictors import DCNPredictor, DeepFMPredictor, DINPredictor, DotPredictor, Predictor
from genrec.training.checkpoint import load_tensors, save_tensors

__all__ = ["BEHAVIOR_OPERATORS", "CONTENT_OPERATORS", "ContentRecommender", "PREDICTORS", "resolve_operator"]

WEIGHTS, CONFIG = "content.safetensors", "config.gin"

CONTENT_OPERATORS: dict[str, type] = {"cnn": CNNContent, "attention": AttentionContent,
                                      "fastformer": FastformerContent, "lm": PretrainedLMContent}
"""Content operator name -> class (built as ``cls(texts=..., dim=D)``)."""

BEHAVIOR_OPERATORS: dict[str, type] = {"additive": AdditiveBehavior, "gru": GRUBehavior,
                                       "transformer": TransformerBehavior, "fastformer": FastformerBehavior,
                                       "mean": MeanBehavior}
"""Behavior operator name -> class (built as ``cls(dim=D)``)."""

PREDICTORS: dict[str, type] = {"dot": DotPredictor, "dcn": DCNPredictor, "deepfm": DeepFMPredictor,
                               "din": DINPredictor}
"""Click predictor name -> class (built as ``cls(dim=D)``)."""

_KINDS = {"item_encoder": (CONTENT_OPERATORS, ContentOperator), "user_encoder": (BEHAVIOR_OPERATORS, BehaviorOperator),
          "predictor": (PREDICTORS, Predictor)}


def resolve_operator(kind: str, spec: str | Callable) -> Callable:
    """The class (or gin-configured factory) for ``ContentRecommender.<kind>``, by name or ``@`` reference.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    registry, _ = _KINDS[kind]
    if isinstance(spec, str):
        if spec.lower() not in registry:
            raise ValueError(f"unknown ContentRecommender.{kind} {spec!r}; known names: {', '.join(registry)} "
                             f"(or an @ reference such as @{next(iter(registry.values())).__name__})")
        return registry[spec.lower()]
    if not callable(spec):
        raise ValueError(f"ContentRecommender.{kind} must be a name ({', '.join(registry)}) or an @ reference, "
                         f"got {spec!r}")
    return spec


def _registry_name(kind: str, operator) -> str | None:
    """The registry name of a built operator's class (``attention``), or None for another class."""
    registry, _ = _KINDS[kind]
    return next((name for name, cls in registry.items() if type(operator) is cls), None)


@gin.configurable(denylist=["texts"])
class ContentRecommender(Recommender):
    """A content-based recommender composed of three operators.

    Args:
        texts: N item texts, ``texts[i - 1]`` for item i (from ``ItemCatalog.texts()``; never from gin).
        item_encoder: content operator: a name of :data:`CONTENT_OPERATORS` or an ``@`` reference.
        user_encoder: behavior operator: a name of :data:`BEHAVIOR_OPERATORS` or an ``@`` reference.
        predictor: click predictor: a name of :data:`PREDICTORS` or an ``@`` reference.
        dim: D, the width of item and user vectors.
        max_history: most recent history items a user vector sees (training and evaluation).
        loss: ``softmax`` (1 positive + K negatives, cross-entropy) or ``bce`` (pointwise).
        num_negatives: K, uniformly sampled negatives per positive.
        eval_cache: encode every item once per evaluation (see the module docstring).
        encode_batch_size: items per content-operator call when the evaluation table is built.
    """

    def __init__(self, texts: list[str], item_encoder: str | Callable = "attention",
                 user_encoder: str | Callable = "transformer", predictor: str | Callable = "dot", dim: int = 64,
                 max_history: int = 50, loss: str = "softmax", num_negatives: int = 4, eval_cache: bool = True,
                 encode_batch_size: int = 256):
        super().__init__()
        if loss not in ("softmax", "bce"):
            raise ValueError(f"unknown ContentRecommender.loss {loss!r}; use 'softmax' (1 positive + K negatives, "
                             "cross-entropy) or 'bce' (pointwise binary cross-entropy)")
        if num_negatives < 1:
            raise ValueError(f"ContentRecommender.num_negatives must be >= 1, got {num_negatives}")
        if max_history < 1:
            raise ValueError(f"ContentRecommender.max_history must be >= 1, got {max_history}")
        self.num_items, self.max_history, self.loss_type = len(texts), max_history, loss
        self.texts = list(texts)
        self.num_negatives, self.eval_cache, self.encode_batch_size = num_negatives, eval_cache, encode_batch_size
        self.item_encoder = resolve_operator("item_encoder", item_encoder)(texts=list(texts), dim=dim)
        self.user_encoder = resolve_operator("user_encoder", user_encoder)(dim=dim)
        self.predictor = resolve_operator("predictor", predictor)(dim=dim)
        for kind in _KINDS:
            expected = _KINDS[kind][1]
            if not isinstance(getattr(self, kind), expected):
                raise ValueError(f"ContentRecommender.{kind} built a {type(getattr(self, kind)).__name__}, which is "
                                 f"not a {expected.__name__}; pick one of {', '.join(_KINDS[kind][0])}")
        operators = {kind: _registry_name(kind, getattr(self, kind)) for kind in _KINDS}
        self.settings = {**operators, "dim": dim, "max_history": max_history, "loss": loss,
                         "num_negatives": num_negatives, "eval_cache": eval_cache,
                         "encode_batch_size": encode_batch_size}  # None for an operator outside the registries
        self._table: torch.Tensor | None = None
        self._table_key: tuple | None = None
        self.table_builds = 0  # how many times the evaluation table was computed (tests, benchmarks)

    # ------------------------------------------------------------------ training

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors [..., D] of item indices [...] (0 = padding -> zeros); every distinct item is encoded once."""
        flat = items.reshape(-1)
        unique, inverse = torch.unique(flat, return_inverse=True)
        real = unique > 0
        vectors = torch.zeros(len(unique), self.item_encoder.dim, device=items.device)
        if real.any():
            encoded = self.item_encoder(unique[real])
            vectors = vectors.to(encoded.dtype)
            vectors[real] = encoded
        return vectors[inverse].reshape(*items.shape, -1)

    def sample_negatives(self, target: torch.Tensor) -> torch.Tensor:
        """K uniform negatives [B, K] per target [B] in 1..N; a draw equal to the target moves to the next item."""
        negatives = torch.randint(1, self.num_items + 1, (len(target), self.num_negatives), device=target.device)
        clash = negatives == target.unsqueeze(1)
        return torch.where(clash, negatives % self.num_items + 1, negatives)

    def impression_negatives(self, target: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """K negatives [B, K] per row from its impression's non-clicked news ``pool`` [B, P] (0 = padding).

        A pool of at least K news gives K distinct ones, uniformly; a smaller pool gives all of its
        news, then uniform draws from it with replacement (NRMS pads with empty news instead); an
        empty pool (every candidate clicked) falls back to :meth:`sample_negatives`.
        """
        real = pool > 0
        count = real.sum(1, keepdim=True)  # [B, 1]
        order = torch.rand(pool.shape, device=pool.device).masked_fill(~real, 2.0).argsort(1)  # real ones first
        slot = torch.arange(self.num_negatives, device=pool.device).expand(len(pool), -1)
        draw = (torch.rand(slot.shape, device=pool.device) * count.clamp(min=1)).long()
        picked = pool.gather(1, order.gather(1, torch.where(slot < count, slot, draw)))
        return torch.where(count > 0, picked, self.sample_negatives(target))

    def forward(self, history: torch.Tensor, target: torch.Tensor, negative_pool: torch.Tensor | None = None):
        """Args: history [B, H] right-padded item indices (an empty row is one padding item); target [B];
        negative_pool [B, P]: the impression's non-clicked news, 0-padded (MIND), or None to sample
        negatives uniformly.

        Returns:
            (scores [B, 1 + K] of the target and its negatives, loss)
        """
        history = history.long()
        mask = _history_mask(history)
        negatives = (self.sample_negatives(target) if negative_pool is None
                     else self.impression_negatives(target, negative_pool.long()))
        candidates = torch.cat([target.unsqueeze(1), negatives], dim=1)  # [B, 1 + K]
        vectors = self.encode_items(torch.cat([history, candidates], dim=1))
        history_vectors, candidate_vectors = vectors[:, :history.shape[1]], vectors[:, history.shape[1]:]
        user = self.user_encoder(history_vectors, mask)
        scores = self.predictor(user, candidate_vectors, history_vectors, mask)
        if self.loss_type == "softmax":
            loss = F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))
        else:
            labels = torch.zeros_like(scores)
            labels[:, 0] = 1.0
            loss = F.binary_cross_entropy_with_logits(scores, labels)
        return scores, loss

    # ------------------------------------------------------------------ evaluation

    def train(self, mode: bool = True):
        if mode:
            self.invalidate_cache()
        return super().train(mode)

    def invalidate_cache(self) -> None:
        """Drops the evaluation table (needed only after writing weights through ``.data``)."""
        self._table, self._table_key = None, None

    def _weights_key(self) -> tuple:
        return tuple((id(t), t._version, t.data_ptr()) for t in (*self.parameters(), *self.buffers()))

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """Every item's vector, [N + 1, D] with row 0 zero; computed once per weight state (eval mode)."""
        key = self._weights_key()
        if self._table is not None and self._table_key == key and not self.training:
            return self._table
        device = next(self.parameters()).device
        items = torch.arange(1, self.num_items + 1, device=device)
        lengths = self.item_encoder.lengths()
        if lengths is not None:  # batches of similar length: little padding to cut
            items = items[torch.argsort(lengths[1:], stable=True)]
        parts = [self.item_encoder(items[start:start + self.encode_batch_size])
                 for start in range(0, self.num_items, self.encode_batch_size)]
        table = parts[0].new_zeros(self.num_items + 1, parts[0].shape[1])
        table[items] = torch.cat(parts)
        self.table_builds += 1
        if not self.training:
            self._table, self._table_key = table, key
        return table

    def _encode_in_batches(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.item_encoder(items[start:start + self.encode_batch_size])
                          for start in range(0, len(items), self.encode_batch_size)])

    @contextmanager
    def _layer_cache(self, enabled: bool):
        encoder = self.item_encoder
        previous = getattr(encoder, "layer_cache", None)
        if previous is not None:
            encoder.layer_cache = enabled and previous
        try:
            yield
        finally:
            if previous is not None:
                encoder.layer_cache = previous

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        """Float32 scores [B, N + 1] of every item for time-ordered histories; column 0 is -inf.

        Uses the evaluation cache when ``eval_cache`` is on, else the naive path (module docstring).
        ``users`` is ignored: a user is its history.
        """
        if any(len(h) == 0 for h in histories):
            raise ValueError("ContentRecommender.score got an empty history; a user vector needs at least one item")
        device = next(self.parameters()).device
        history = right_pad(histories, self.max_history).to(device)
        mask = history > 0
        if self.eval_cache:
            table = self.item_table()
            history_vectors, items = table[history], table[1:]
        else:
            with self._layer_cache(False):
                history_vectors = self._encode_in_batches(history[mask])  # every user's items, no sharing
                history_vectors = history_vectors.new_zeros(*history.shape, history_vectors.shape[-1]).index_put(
                    (mask,), history_vectors)
                items = self._encode_in_batches(torch.arange(1, self.num_items + 1, device=device))
        user = self.user_encoder(history_vectors, mask)
        scores = self.predictor.score_all(user, items, history_vectors, mask)
        scores = scores.float()
        return torch.cat([torch.full((len(scores), 1), float("-inf"), device=device, dtype=scores.dtype), scores], 1)

    @torch.no_grad()
    def score_candidates(self, histories: Sequence[np.ndarray], candidates: Sequence[np.ndarray]) -> torch.Tensor:
        """Float32 scores [B, C] of each row's candidates (an impression), C the longest row; columns
        past a row's candidates are -inf. An empty history is one padding item (a zero vector)."""
        device = next(self.parameters()).device
        history = right_pad(histories, self.max_history).to(device)
        mask = _history_mask(history)
        width = max(len(row) for row in candidates)
        padded = np.zeros((len(candidates), width), dtype=np.int64)
        for row, items in enumerate(candidates):
            padded[row, :len(items)] = items
        shown = torch.from_numpy(padded).to(device)
        if self.eval_cache:
            table = self.item_table()
            history_vectors, candidate_vectors = table[history], table[shown]
        else:
            history_vectors, candidate_vectors = self.encode_items(history), self.encode_items(shown)
        user = self.user_encoder(history_vectors, mask)
        scores = self.predictor(user, candidate_vectors, history_vectors, mask).float()
        return scores.masked_fill(shown == 0, float("-inf"))

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``<folder>/content.safetensors`` (weights; item texts and raw ids as metadata) and
        ``<folder>/config.gin``, the current operative gin config: call it in the process that built
        the model (the trainer does, into ``<run dir>/model/``)."""
        if self.item_ids is None:
            raise ValueError("this ContentRecommender has no raw item ids; call set_item_ids(item_ids) first")
        unnamed = [kind for kind in _KINDS if self.settings[kind] is None]
        if unnamed:
            raise ValueError(f"ContentRecommender.save_pretrained: the {', '.join(unnamed)} is not one of the "
                             "registered operators (CONTENT_OPERATORS, BEHAVIOR_OPERATORS, PREDICTORS), so it "
                             "could not be rebuilt on loading")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / CONFIG, gin.operative_config_str())
        save_tensors(folder / WEIGHTS, self.state_dict(), {"texts": self.texts, "item_ids": self.item_ids,
                                                           "settings": self.settings})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ContentRecommender:
        """Loads a folder written by :meth:`save_pretrained` (e.g. a content run's ``model/``), in eval mode.

        The model is rebuilt with its saved settings (operators by registry name, width, ...) and the
        operators' own settings from the saved config, parsed in an isolated gin configuration (the
        caller's is restored; bindings of configurables this process does not know are skipped).
        """
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            reason = "does not exist" if not folder.exists() else f"lacks {WEIGHTS} or {CONFIG}"
            raise FileNotFoundError(f"{folder} is not a saved ContentRecommender (it {reason}); save one with "
                                    "save_pretrained, e.g. the model/ folder of a content run")
        tensors, meta = load_tensors(folder / WEIGHTS)
        if "texts" not in meta:
            raise ValueError(f"{folder / WEIGHTS} has no item texts; it was not written by "
                             "ContentRecommender.save_pretrained")
        with isolated_config([]):
            gin.parse_config((folder / CONFIG).read_text(), skip_unknown=True)
            model = cls(texts=meta["texts"], **meta.get("settings", {}))
        model.load_state_dict(tensors)
        model.set_item_ids(meta["item_ids"])
        return model.eval()


def _history_mask(history: torch.Tensor) -> torch.Tensor:
    """Real positions of right-padded histories [B, H]; an empty row keeps its first (padding) item,
    whose vector is zero, so every operator sees one position."""
    mask = history > 0
    mask[:, 0] |= ~mask.any(1)
    return mask
