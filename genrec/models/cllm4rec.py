"""CLLM4Rec-style soft-token recommender: collaborative user/item embeddings fed to an LLM.

Inspired by CLLM4Rec (Zhu et al., "Collaborative Large Language Model for Recommender Systems",
WWW 2024, arXiv 2311.01343; code ``yaochenzhu/LLM4Rec``). As there, users and items are not new
words of the LLM's vocabulary: they live in their own embedding tables and enter the LLM as soft
tokens through ``inputs_embeds``, so the HF checkpoint, its vocabulary and its LM head stay untouched
and any HF decoder works (Llama/SmolLM2, Qwen2, GPT-2 are tested).

Mechanism (one user, training sequence ``s``):

* Tables ``E_user`` [U+1, d] and ``E_item`` [N+1, d] (d = ``d_rec``, 128); user row 0 is the
  *anonymous user* (see below), item row 0 is padding.
* One projection ``W_in`` maps both tables to the LLM width D (users and items share the d-space,
  since the user-item BPR compares them directly); the LLM reads the soft-token sequence
  ``[user, s_0, s_1, ..., s_{T-1}]`` (the ``max_len`` most recent items).
* The LLM's last hidden state at each position goes through ``W_out`` back to d, and every item is
  scored by the dot product with its row of ``E_item``: ``score_t(j) = <W_out h_t, E_item[j]>``. No
  output vocabulary, no LM head: the user position predicts ``s_0``, the position of ``s_t``
  predicts ``s_{t+1}``.

Losses (weights are constructor arguments, bound in gin):

* ``ce_weight`` x autoregressive cross-entropy over all N items at every labelled position;
* ``bpr_context_weight`` x context-item BPR: ``-log sigmoid(<c_t, e_pos> - <c_t, e_neg>)`` for the
  projected hidden state ``c_t`` against ``num_negatives`` uniformly sampled negatives;
* ``bpr_user_weight`` x user-item BPR: the same with the user's own embedding ``e_u`` instead of
  ``c_t`` (matrix factorisation on the same positives);
* ``l2_weight`` x ``(||E_user||^2 + ||E_item||^2)`` over the whole tables.

Deviations from CLLM4Rec, on purpose: the official recipe has no BPR loss and no next-item CE over a
time-ordered sequence (it pre-trains a collaborative LM on "user_i has interacted with item_j ..."
prompts, a content LM on reviews, with mutual regularisation, then fine-tunes with a multinomial
likelihood over a held-out 20%). Here the soft tokens model the sequence directly, so the model
is evaluated by genrec's shared leave-one-out next-item protocols like every other model; the BPR
parts are our extension, off by default. There are no text prompts and no content LM (ml-100k has
no reviews).

The LLM (``tuning``): ``frozen`` (only the tables and projections train; the default, as in the
paper), ``lora`` (peft adapters on every linear layer) or ``full``. The LLM's word embeddings are
never used (every input is a soft token), so they are always frozen; its LM head is dropped.
``random_init`` keeps the architecture with random weights, for ablation.

Users at evaluation and serving: under leave-one-out every valid/test user is a training user, so
the user token is the trained row. A user the model never saw (``recommend(history=...)``) gets the
anonymous row 0, which is trained on ``user_dropout`` (10%) of the training windows in place of the
real user, so the model also learns to read a history without knowing whose it is.

Serving (:meth:`CLLM4Rec.recommend`): the query ``W_out h_last`` is searched in a faiss
inner-product index over ``E_item`` (exact ``IndexFlatIP`` by default, ``IndexIVFFlat`` for large
catalogues); items in the history are excluded. :meth:`save_pretrained` writes one folder.

Shapes: B batch, L soft tokens (1 user + up to ``max_len`` items), D LLM width, d ``d_rec``,
N items, U users, M labelled positions, K negatives or list length.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm
from genrec.io import atomic_write_text
from genrec.training.checkpoint import load_tensors, save_tensors

__all__ = ["CLLM4Rec", "UserSequenceWindows", "TUNINGS", "LORA_DEFAULTS"]

SETTINGS = "cllm4rec.json"
TABLES = "tables.safetensors"
LLM_STATE = "state.safetensors"
TUNINGS = ("frozen", "lora", "full")
LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"}
ANONYMOUS = 0  # user row of a user the model never saw


class UserSequenceWindows(Dataset):
    """Training windows ``[user, s_a, ..., s_{e-2}]`` -> labels ``[s_a, ..., s_{e-1}]``, right-padded.

    For a user's training sequence ``s`` (n items) windows end at ``e = n, n - stride, ...``
    (labels exclusive); a window holds the ``max_len`` items before its last label, preceded by the
    user token, so the user position predicts the window's first item and the position of ``s_t``
    predicts ``s_{t+1}``. As in :class:`genrec.data.windows.SequenceWindows`, labels that an earlier
    window already trains are masked (-100), so each item is a target exactly once per epoch; with
    the default ``stride = max_len`` the user position is labelled only in a user's first window
    (predicting ``s_0`` from the user alone).

    Args:
        sequences: time-ordered item indices per user index (users with no items add nothing).
        max_len: most items in a window's input.
        stride: distance between window ends, 1..``max_len`` (default ``max_len``).

    Items: ``{"users": LongTensor [], "items": LongTensor [max_len] (0-padded on the right),
    "labels": LongTensor [max_len + 1] (-100 where no loss)}``.
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int, stride: int | None = None):
        stride = stride or max_len
        if max_len < 1 or not 1 <= stride <= max_len:
            raise ValueError(f"window stride must be in 1..max_len ({max_len}), got {stride}")
        users, items, labels = [], [], []
        for user, seq in enumerate(sequences):
            seq = np.asarray(seq, dtype=np.int64)
            n = len(seq)
            ends = list(range(n, 0, -stride))
            for w, end in enumerate(ends):
                start = max(0, end - 1 - max_len)
                x = np.zeros(max_len, dtype=np.int64)
                y = np.full(max_len + 1, -100, dtype=np.int64)
                x[: end - 1 - start] = seq[start:end - 1]
                y[: end - start] = seq[start:end]
                if w < len(ends) - 1:  # not the user's earliest window: earlier labels belong to the next one
                    y[: end - start - min(stride, end)] = -100
                users.append(user)
                items.append(x)
                labels.append(y)
        self.users = torch.tensor(users, dtype=torch.long)
        self.items = torch.from_numpy(np.stack(items)) if items else torch.zeros(0, max_len, dtype=torch.long)
        self.labels = torch.from_numpy(np.stack(labels)) if labels else torch.zeros(0, max_len + 1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"users": self.users[i], "items": self.items[i], "labels": self.labels[i]}


@gin.configurable(denylist=["num_users", "num_items"])
class CLLM4Rec(nn.Module):
    """Soft user/item tokens through a causal LLM, items scored against their embeddings.

    Args:
        num_users: U, users are 0..U-1 (from the data, never from gin).
        num_items: N, items are 1..N and 0 is padding (from the data).
        pretrained_path: the LLM: ``bundled:smollm2-135m-instruct`` (default), a local folder or a hub id.
        d_rec: d, width of the user and item tables.
        max_len: most recent history items in the soft-token sequence (plus the user token).
        tuning: ``frozen`` (tables and projections only), ``lora`` or ``full``.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale numerator (scale = alpha / r) and input
            dropout, for ``tuning="lora"``.
        lora_targets: module names that get adapters; ``"all-linear"`` (default) is every linear
            layer of the LLM, whatever its architecture.
        random_init: the LLM's architecture with random weights (ablation).
        dtype: LLM weight dtype, ``float32`` (default), ``bfloat16`` or ``float16``; the tables and
            projections stay float32.
        gradient_checkpointing: recompute LLM activations in the backward pass (less memory, slower).
        ce_weight: weight of the all-item cross-entropy.
        bpr_context_weight: weight of the context-item BPR (0 disables it).
        bpr_user_weight: weight of the user-item BPR (0 disables it).
        num_negatives: uniformly sampled negatives per positive for the BPR parts.
        l2_weight: lambda_c of ``lambda_c (||E_user||^2 + ||E_item||^2)``.
        user_dropout: probability that a training window shows the anonymous user instead of its own.
        init_std: standard deviation of the tables' N(0, std) initialisation.
    """

    def __init__(self, num_users: int, num_items: int, pretrained_path: str = BUNDLED_LLM, d_rec: int = 128,
                 max_len: int = 50, tuning: str = "frozen", lora_r: int = 8, lora_alpha: int = 16,
                 lora_dropout: float = 0.05, lora_targets: str | Sequence[str] = "all-linear",
                 random_init: bool = False, dtype: str = "float32", gradient_checkpointing: bool = False,
                 ce_weight: float = 1.0, bpr_context_weight: float = 0.0, bpr_user_weight: float = 0.0,
                 num_negatives: int = 30, l2_weight: float = 1e-5, user_dropout: float = 0.1,
                 init_std: float = 0.02):
        super().__init__()
        if tuning not in TUNINGS:
            raise ValueError(f"unknown CLLM4Rec.tuning {tuning!r}; use one of {', '.join(TUNINGS)}")
        if num_users < 1 or num_items < 1:
            raise ValueError(f"CLLM4Rec needs at least one user and one item, got {num_users} and {num_items}")
        if min(d_rec, max_len, num_negatives) < 1:
            raise ValueError(f"CLLM4Rec.d_rec ({d_rec}), max_len ({max_len}) and num_negatives ({num_negatives}) "
                             "must be >= 1")
        if min(ce_weight, bpr_context_weight, bpr_user_weight, l2_weight) < 0 or not 0 <= user_dropout < 1:
            raise ValueError("CLLM4Rec loss weights must be >= 0 and user_dropout in [0, 1)")
        if ce_weight == bpr_context_weight == 0:
            raise ValueError("CLLM4Rec.ce_weight and bpr_context_weight are both 0: nothing would train the LLM "
                             "path that scores items; set one of them > 0")
        targets = lora_targets if isinstance(lora_targets, str) else list(lora_targets)
        self.settings = dict(num_users=num_users, num_items=num_items, pretrained_path=pretrained_path, d_rec=d_rec,
                             max_len=max_len, tuning=tuning, random_init=random_init, dtype=dtype,
                             ce_weight=ce_weight, bpr_context_weight=bpr_context_weight,
                             bpr_user_weight=bpr_user_weight, num_negatives=num_negatives, l2_weight=l2_weight,
                             user_dropout=user_dropout,
                             lora=dict(r=lora_r, alpha=lora_alpha, dropout=lora_dropout,
                                       target_modules=targets) if tuning == "lora" else None)
        self.num_users, self.num_items, self.max_len = num_users, num_items, max_len

        causal_lm, _ = load_causal_lm(pretrained_path, dtype, random_init)
        self.llm = _backbone(causal_lm)
        width = self.llm.config.hidden_size if hasattr(self.llm.config, "hidden_size") else self.llm.config.n_embd
        word_std = float(self.llm.get_input_embeddings().weight.detach().float().std())
        del causal_lm
        self.user_emb = nn.Embedding(num_users + 1, d_rec)  # row 0: the anonymous user
        self.item_emb = nn.Embedding(num_items + 1, d_rec, padding_idx=0)
        self.in_proj = nn.Linear(d_rec, width)
        self.out_proj = nn.Linear(width, d_rec)
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, init_std)
            self.item_emb.weight.normal_(0.0, init_std)
            self.item_emb.weight[0].zero_()
            # Soft tokens start at the scale of the LLM's own word embeddings (per-dimension std).
            self.in_proj.weight.normal_(0.0, word_std / (init_std * math.sqrt(d_rec)))
            self.in_proj.bias.zero_()

        for p in self.llm.parameters():
            p.requires_grad_(tuning == "full")
        self.llm.get_input_embeddings().weight.requires_grad_(False)  # never read: inputs are soft tokens
        if gradient_checkpointing:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if tuning == "lora":
            self._add_lora(self.settings["lora"])
        self.user_ids: list[str] | None = None
        self.item_ids: list[str] | None = None
        self._histories: tuple[torch.Tensor, torch.Tensor] | None = None  # CSR (offsets [U+1], items)
        self._index = None
        self._index_key = None

    # ------------------------------------------------------------------ LLM

    def _add_lora(self, lora: dict) -> None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                            target_modules=lora["target_modules"])
        self.llm = get_peft_model(self.llm, config)

    # ------------------------------------------------------------------ ids and histories

    def set_ids(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> None:
        """Raw ids of users ``0..U-1`` and items (``item_ids[0]`` is padding), for :meth:`recommend`."""
        if len(user_ids) != self.num_users or len(item_ids) != self.num_items + 1:
            raise ValueError(f"got {len(user_ids)} user ids and {len(item_ids)} item ids (padding included) for a "
                             f"model of {self.num_users} users and {self.num_items} items (+1 padding)")
        self.user_ids, self.item_ids = [str(u) for u in user_ids], [str(i) for i in item_ids]
        self._user_lookup = {raw: u for u, raw in enumerate(self.user_ids)}
        self._item_lookup = {raw: i for i, raw in enumerate(self.item_ids) if i > 0}

    def set_histories(self, sequences: Sequence[np.ndarray]) -> None:
        """Each known user's time-ordered items, for ``recommend(user=...)`` (its last ``max_len`` items
        are the model's input; all of them are excluded from the recommendations)."""
        if len(sequences) != self.num_users:
            raise ValueError(f"got {len(sequences)} histories for {self.num_users} users")
        kept = [np.asarray(s, dtype=np.int64) for s in sequences]
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in kept])])
        self._histories = (torch.from_numpy(offsets), torch.from_numpy(np.concatenate(kept) if kept else offsets[:0]))

    def user_index(self, raw_id: str) -> int:
        """User index of a raw user id; ValueError naming the id when it is unknown."""
        self._require_ids()
        try:
            return self._user_lookup[str(raw_id)]
        except KeyError:
            raise ValueError(f"unknown user id {raw_id!r}: not among this model's {self.num_users} users (e.g. "
                             f"{self.user_ids[0]!r}); pass history=[...] without user to recommend for a new "
                             "user") from None

    def item_index(self, raw_id: str) -> int:
        """Item index of a raw item id; ValueError naming the id when it is unknown."""
        self._require_ids()
        try:
            return self._item_lookup[str(raw_id)]
        except KeyError:
            raise ValueError(f"unknown item id {raw_id!r}: not among this model's {self.num_items} items (e.g. "
                             f"{self.item_ids[1]!r})") from None

    def _require_ids(self) -> None:
        if self.user_ids is None:
            raise ValueError("this CLLM4Rec has no raw ids; call set_ids(user_ids, item_ids) first")

    # ------------------------------------------------------------------ model

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Projected hidden states [B, L, d] of the sequences ``[user, items...]``.

        Args:
            users: LongTensor [B], table rows (0 = anonymous, u + 1 = user index u).
            items: LongTensor [B, L-1], item indices right-padded with 0.
        """
        device = self.item_emb.weight.device
        users, items = users.to(device), items.to(device)
        tokens = torch.cat([self.user_emb(users)[:, None], self.item_emb(items)], dim=1)  # [B, L, d]
        mask = torch.cat([torch.ones_like(items[:, :1]), (items > 0).long()], dim=1)  # [B, L]
        llm_dtype = self.llm.get_input_embeddings().weight.dtype
        hidden = self.llm(inputs_embeds=self.in_proj(tokens).to(llm_dtype), attention_mask=mask,
                          use_cache=False).last_hidden_state
        return self.out_proj(hidden.to(self.out_proj.weight.dtype))

    def logits(self, context: torch.Tensor) -> torch.Tensor:
        """Scores [..., N+1] of every item for projected states [..., d]; the padding column is -inf."""
        scores = context @ self.item_emb.weight.T
        scores[..., 0] = float("-inf")
        return scores

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: users [B] user indices; items [B, L-1] right-padded; labels [B, L], -100 where no loss.

        Returns:
            (projected states [B, L, d], weighted loss or None without labels).
        """
        self._check_users(users)
        rows = users.to(self.item_emb.weight.device) + 1
        shown = rows
        if self.training and self.settings["user_dropout"] > 0:
            drop = torch.rand(rows.shape, device=rows.device) < self.settings["user_dropout"]
            shown = rows.masked_fill(drop, ANONYMOUS)
        context = self.encode(shown, items)
        if labels is None:
            return context, None
        return context, self.loss(context, rows, labels.to(context.device))

    def loss(self, context: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the losses of the module docstring.

        Args:
            context: [B, L, d] projected states.
            rows: [B] user table rows (the real users, also when the anonymous one was shown).
            labels: [B, L] next items, -100 where no loss.
        """
        s = self.settings
        keep = labels != -100
        c, target = context[keep], labels[keep]  # [M, d], [M]
        total = context.new_zeros(())
        if s["ce_weight"]:
            total = total + s["ce_weight"] * F.cross_entropy(self.logits(c), target)
        if s["bpr_context_weight"] or s["bpr_user_weight"]:
            # Uniform over the N - 1 items other than the positive.
            shift = torch.randint(1, self.num_items, (len(target), s["num_negatives"]), device=target.device)
            negatives = (target[:, None] - 1 + shift) % self.num_items + 1  # [M, K]
            positive, negative = self.item_emb(target), self.item_emb(negatives)  # [M, d], [M, K, d]
            if s["bpr_context_weight"]:
                total = total + s["bpr_context_weight"] * _bpr(c, positive, negative)
            if s["bpr_user_weight"]:
                user = self.user_emb(rows[:, None].expand_as(labels)[keep])  # [M, d]
                total = total + s["bpr_user_weight"] * _bpr(user, positive, negative)
        if s["l2_weight"]:
            total = total + s["l2_weight"] * (self.user_emb.weight.square().sum() + self.item_emb.weight.square().sum())
        return total

    def _check_users(self, users: torch.Tensor | np.ndarray) -> None:
        users = torch.as_tensor(users)
        if users.numel() and (users.min() < 0 or users.max() >= self.num_users):
            raise ValueError(f"user indices must be in 0..{self.num_users - 1} (this model's users), got values in "
                             f"{int(users.min())}..{int(users.max())}")

    # ------------------------------------------------------------------ scoring

    def _batch(self, histories: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded [B, l] items (the last ``max_len`` of each history) and each row's last position [B]."""
        kept = [np.asarray(h, dtype=np.int64)[-self.max_len:] for h in histories]
        for b, h in enumerate(kept):
            if len(h) and (h.min() < 1 or h.max() > self.num_items):
                raise ValueError(f"history {b} holds item indices outside 1..{self.num_items}")
        width = max(1, max((len(h) for h in kept), default=0))
        items = np.zeros((len(kept), width), dtype=np.int64)
        for b, h in enumerate(kept):
            items[b, : len(h)] = h
        return torch.from_numpy(items), torch.tensor([len(h) for h in kept])

    @torch.no_grad()
    def query(self, users: np.ndarray | torch.Tensor | None, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Query vectors [B, d]: the projected state after each history's last item.

        Args:
            users: [B] user indices, or ``None`` (every row the anonymous user); an entry of -1 is
                also the anonymous user.
            histories: B time-ordered arrays of item indices (may be empty: the user token alone).
        """
        items, last = self._batch(histories)
        if users is None:
            rows = torch.full((len(histories),), ANONYMOUS, dtype=torch.long)
        else:
            users = torch.as_tensor(np.asarray(users), dtype=torch.long)
            if len(users) != len(histories):
                raise ValueError(f"got {len(users)} users for {len(histories)} histories")
            known = users >= 0
            self._check_users(users[known])
            rows = torch.where(known, users + 1, ANONYMOUS)
        context = self.encode(rows, items)
        return context[torch.arange(len(last)), last.to(context.device)]

    @torch.no_grad()
    def score(self, users: np.ndarray | torch.Tensor | None, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores [B, N+1] of every item after each history (see :meth:`query`); column 0 is -inf."""
        return self.logits(self.query(users, histories))

    # ------------------------------------------------------------------ serving

    def build_index(self, kind: str = "flat", nlist: int | None = None, nprobe: int = 8):
        """(Re)builds the faiss inner-product index over the item embeddings and returns it.

        Args:
            kind: ``flat`` (exact ``IndexFlatIP``, the default) or ``ivf`` (``IndexIVFFlat``: approximate,
                for large catalogues).
            nlist: IVF cells (default ``4 sqrt(N)``, at most N / 39 so every cell trains on 39 items).
            nprobe: IVF cells searched per query.
        """
        import faiss

        vectors = self.item_emb.weight.detach()[1:].float().cpu().contiguous().numpy()
        d = vectors.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = nlist or max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39))
            if not 1 <= nlist <= len(vectors):
                raise ValueError(f"nlist must be in 1..{len(vectors)} (the number of items), got {nlist}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = nprobe
        else:
            raise ValueError(f"unknown index kind {kind!r}; use 'flat' (exact) or 'ivf'")
        index.add(vectors)  # faiss id i = item i + 1
        self._index, self._index_key = index, self._embedding_key()
        return index

    def _embedding_key(self) -> tuple:
        weight = self.item_emb.weight
        return weight.data_ptr(), weight._version  # changes with every in-place update (optimizer, load)

    @torch.no_grad()
    def recommend_indices(self, users: np.ndarray | None, histories: Sequence[np.ndarray], k: int = 10,
                          exclude_history: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices [B, k] and their scores [B, k] from the faiss index (built when missing or stale).

        Args:
            users: [B] user indices (-1: anonymous) or ``None``.
            histories: B arrays of item indices.
            k: list length, 1..N.
            exclude_history: leave out items of the history (fewer than k remain: padded with 0 / -inf).
        """
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in 1..{self.num_items} (the number of items), got {k}")
        if self._index is None or self._index_key != self._embedding_key():
            self.build_index()
        queries = self.query(users, histories).float().cpu().contiguous().numpy()
        extra = max((len(np.asarray(h)) for h in histories), default=0) if exclude_history else 0
        scores, ids = self._index.search(queries, min(self.num_items, k + extra))
        out_items = torch.zeros(len(histories), k, dtype=torch.long)
        out_scores = torch.full((len(histories), k), float("-inf"))
        for b, history in enumerate(histories):
            seen = set(np.asarray(history).tolist()) if exclude_history else set()
            row = [(i + 1, s) for i, s in zip(ids[b].tolist(), scores[b].tolist()) if i >= 0 and i + 1 not in seen][:k]
            if row:
                out_items[b, : len(row)] = torch.tensor([i for i, _ in row])
                out_scores[b, : len(row)] = torch.tensor([s for _, s in row])
        return out_items, out_scores

    def recommend(self, user: str | None = None, history: Sequence[str] | None = None, k: int = 10,
                  exclude_history: bool = True) -> list[tuple[str, float]]:
        """Top-k raw item ids and scores for a known user, a history, or both.

        Args:
            user: a raw user id the model was trained with. Without ``history`` the user's stored
                history is used (:meth:`set_histories`; the trainer stores every known interaction).
            history: raw item ids, oldest first. Without ``user`` the anonymous user token is used
                (a user the model never saw).
            k: list length.
            exclude_history: leave out items of the history.

        Returns:
            k pairs (raw item id, score), best first.
        """
        self._require_ids()
        if user is None and history is None:
            raise ValueError("recommend needs a user id, a history of item ids, or both")
        if isinstance(history, str):
            raise ValueError("history must be a list of item ids, not a string")
        u = self.user_index(user) if user is not None else -1
        if history is not None:
            items = np.array([self.item_index(raw) for raw in history], dtype=np.int64)
        elif self._histories is None:
            raise ValueError("this CLLM4Rec stores no user histories; pass history=[...] or call set_histories")
        else:
            offsets, flat = self._histories
            items = flat[offsets[u]:offsets[u + 1]].numpy()
        top, scores = self.recommend_indices(np.array([u]), [items], k, exclude_history)
        return [(self.item_ids[i], float(s)) for i, s in zip(top[0].tolist(), scores[0].tolist()) if i > 0]

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``cllm4rec.json`` (settings, raw ids), ``tables.safetensors`` (tables, projections,
        histories) and ``llm/``: the peft LoRA adapter over ``pretrained_path``; or the whole LLM
        (``AutoModel`` folder) when fully fine-tuned or randomly initialised; or, for LoRA over a
        random LLM, ``llm/state.safetensors`` (base and adapters); nothing for a frozen pretrained
        LLM, which is reloaded from ``pretrained_path``.

        The folder is written next to its destination and renamed into place, so it is either the
        previous one or complete.
        """
        self._require_ids()
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            tensors = {name: getattr(self, name).weight for name in ("user_emb", "item_emb", "in_proj", "out_proj")}
            tensors.update({"in_proj.bias": self.in_proj.bias, "out_proj.bias": self.out_proj.bias})
            tensors = {(k if "." in k else f"{k}.weight"): v for k, v in tensors.items()}
            if self._histories is not None:
                tensors["histories.offsets"], tensors["histories.items"] = self._histories
            save_tensors(work / TABLES, tensors)
            s = self.settings
            if s["tuning"] == "lora" and s["random_init"]:
                (work / "llm").mkdir()
                save_tensors(work / "llm" / LLM_STATE, self.llm.state_dict())
            elif s["tuning"] != "frozen" or s["random_init"]:
                self.llm.save_pretrained(work / "llm")
            atomic_write_text(work / SETTINGS, json.dumps({**s, "user_ids": self.user_ids, "item_ids": self.item_ids},
                                                          indent=1) + "\n")
            old = folder.with_name(f".{folder.name}.old{os.getpid()}")
            if folder.exists():
                os.rename(folder, old)
            os.rename(work, folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CLLM4Rec:
        """Loads a folder written by :meth:`save_pretrained` (weights from safetensors only)."""
        folder = Path(folder)
        if not (folder / SETTINGS).is_file():
            raise FileNotFoundError(f"{folder} is not a saved CLLM4Rec (no {SETTINGS}); save one with save_pretrained")
        s = json.loads((folder / SETTINGS).read_text())
        user_ids, item_ids, lora = s.pop("user_ids"), s.pop("item_ids"), s.pop("lora")
        tuning, random_init = s["tuning"], s["random_init"]
        if tuning == "lora" and random_init:  # rebuild the same structure, then load base and adapters
            model = cls(**s, lora_r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        lora_targets=lora["target_modules"])
            state, _ = load_tensors(folder / "llm" / LLM_STATE)
            model.llm.load_state_dict(state)
        elif tuning == "lora":
            from peft import PeftModel

            model = cls(**{**s, "tuning": "frozen"})
            model.llm = PeftModel.from_pretrained(model.llm, folder / "llm")
        elif tuning == "full" or random_init:  # the LLM is in the folder: build a random one, then replace it
            from transformers import AutoModel

            model = cls(**{**s, "tuning": "frozen", "random_init": True})
            model.llm = AutoModel.from_pretrained(folder / "llm", dtype=getattr(torch, s["dtype"]))
        else:
            model = cls(**s)
        model.settings.update(tuning=tuning, random_init=random_init, lora=lora)
        tensors, _ = load_tensors(folder / TABLES)
        histories = (tensors.pop("histories.offsets", None), tensors.pop("histories.items", None))
        missing = {"user_emb.weight", "item_emb.weight", "in_proj.weight", "in_proj.bias", "out_proj.weight",
                   "out_proj.bias"} - set(tensors)
        if missing:
            raise ValueError(f"{folder / TABLES} lacks {sorted(missing)}; it was not written by CLLM4Rec.save_pretrained")
        model.load_state_dict(tensors, strict=False)
        if histories[0] is not None:
            model._histories = histories
        model.set_ids(user_ids, item_ids)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()


def _bpr(query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean ``-log sigmoid(<q, p> - <q, n_k>)`` over rows and negatives; q, p [M, d], n [M, K, d]."""
    pos = (query * positive).sum(-1, keepdim=True)  # [M, 1]
    neg = torch.einsum("md,mkd->mk", query, negative)  # [M, K]
    return -F.logsigmoid(pos - neg).mean()


def _backbone(causal_lm: nn.Module) -> nn.Module:
    """The decoder stack of a ``*ForCausalLM`` (``LlamaModel``, ``GPT2Model``, ...), without its LM head."""
    backbone = getattr(causal_lm, "base_model", None)
    if backbone is None or backbone is causal_lm or not hasattr(backbone, "get_input_embeddings"):
        raise ValueError(f"cannot find the decoder stack of {type(causal_lm).__name__} (no base_model); "
                         "CLLM4Rec needs a Hugging Face *ForCausalLM model")
    return backbone
