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
  ``[user, s_0, s_1, ..., s_{T-1}]`` (the ``max_history`` most recent items).
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
paper), ``lora`` (peft adapters with the run's :func:`genrec.llm.lora.lora_settings`) or ``full``.
Its word embeddings are never used (every input is a soft token), so they are always frozen; its LM
head is dropped. ``random_init`` keeps the architecture with random weights, for ablation. Training
windows are :class:`genrec.data.windows.SequenceWindows` with ``with_user=True``.

Users at evaluation and serving: under leave-one-out every valid/test user is a training user, so
the user token is the trained row. A user the model never saw (``users=None``, or -1) gets the
anonymous row 0, which is trained on ``user_dropout`` (10%) of the training windows in place of the
real user, so the model also learns to read a history without knowing whose it is.

The model follows :class:`genrec.models.base.Recommender`. Serving (:meth:`CLLM4Rec.recommend_indices`):
the query ``W_out h_last`` is searched in a faiss inner-product index over ``E_item``
(:class:`genrec.retrieval.InnerProductIndex`); items in the history are excluded.
:meth:`save_pretrained` writes one safetensors file: settings and raw ids, the tables and
projections, every LLM weight that training changed (all of a random LLM), the users' histories.

About 420 lines, on purpose ("one model, one file"): the model, its four losses, known-user serving
and save/load; its windows, padding and faiss index live in genrec.data and genrec.retrieval.

Shapes: B batch, L soft tokens (1 user + up to ``max_history`` items), D LLM width, d ``d_rec``,
N items, U users, M labelled positions, K negatives or list length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.padding import right_pad
from genrec.llm.finetune import enable_activation_checkpointing
from genrec.llm.lora import apply_lora, lora_settings
from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm
from genrec.llm.soft_tokens import decoder_stack, run_decoder, word_embedding_std
from genrec.models.base import Recommender, as_histories
from genrec.retrieval import InnerProductIndex
from genrec.training.checkpoint import load_tensors, save_tensors, trainable_state_dict

__all__ = ["CLLM4Rec", "TUNINGS"]

WEIGHTS = "cllm4rec.safetensors"
TUNINGS = ("frozen", "lora", "full")
ANONYMOUS = 0  # user row of a user the model never saw


@gin.configurable(denylist=["num_users", "num_items"])
class CLLM4Rec(Recommender):
    """Soft user/item tokens through a causal LLM, items scored against their embeddings.

    Args:
        num_users: U, users are 0..U-1 (from the data, never from gin).
        num_items: N, items are 1..N and 0 is padding (from the data).
        pretrained_path: the LLM: ``bundled:smollm2-135m-instruct`` (default), a local folder or a hub id.
        d_rec: d, width of the user and item tables.
        max_history: most recent history items in the soft-token sequence (plus the user token).
        tuning: ``frozen`` (tables and projections only), ``lora`` or ``full``.
        lora: LoRA settings for ``tuning="lora"`` (a dict from :func:`genrec.llm.lora.lora_settings`);
            ``None``: ``lora_settings()`` as the run's gin binds it.
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
                 max_history: int = 50, tuning: str = "frozen", lora: dict | None = None, random_init: bool = False,
                 dtype: str = "float32", gradient_checkpointing: bool = False, ce_weight: float = 1.0,
                 bpr_context_weight: float = 0.0, bpr_user_weight: float = 0.0, num_negatives: int = 30,
                 l2_weight: float = 1e-5, user_dropout: float = 0.1, init_std: float = 0.02):
        super().__init__()
        if tuning not in TUNINGS:
            raise ValueError(f"unknown CLLM4Rec.tuning {tuning!r}; use one of {', '.join(TUNINGS)}")
        if num_users < 1 or num_items < 1:
            raise ValueError(f"CLLM4Rec needs at least one user and one item, got {num_users} and {num_items}")
        if min(d_rec, max_history, num_negatives) < 1 or min(ce_weight, bpr_context_weight, bpr_user_weight,
                                                              l2_weight) < 0 or not 0 <= user_dropout < 1:
            raise ValueError(f"CLLM4Rec.d_rec ({d_rec}), max_history ({max_history}) and num_negatives "
                             f"({num_negatives}) must be >= 1, loss weights >= 0 and user_dropout in [0, 1)")
        if ce_weight == bpr_context_weight == 0:
            raise ValueError("CLLM4Rec.ce_weight and bpr_context_weight are both 0: nothing would train the LLM "
                             "path that scores items; set one of them > 0")
        lora = (lora_settings() if lora is None else lora) if tuning == "lora" else None
        self.settings = dict(num_users=num_users, num_items=num_items, pretrained_path=pretrained_path, d_rec=d_rec,
                             max_history=max_history, tuning=tuning, lora=lora,
                             random_init=random_init, dtype=dtype, ce_weight=ce_weight,
                             bpr_context_weight=bpr_context_weight, bpr_user_weight=bpr_user_weight,
                             num_negatives=num_negatives, l2_weight=l2_weight, user_dropout=user_dropout)
        self.num_users, self.num_items, self.max_history = num_users, num_items, max_history

        causal_lm, _ = load_causal_lm(pretrained_path, dtype, random_init)
        self.llm = decoder_stack(causal_lm)
        width = self.llm.config.hidden_size if hasattr(self.llm.config, "hidden_size") else self.llm.config.n_embd
        word_std = word_embedding_std(self.llm)
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
            enable_activation_checkpointing(self.llm)
        if tuning == "lora":
            self.llm = apply_lora(self.llm, lora)
        # What save_pretrained writes: what training changes, and a random LLM (it cannot be rebuilt).
        self._saved = set(self.state_dict() if random_init else trainable_state_dict(self))
        self._histories: tuple[torch.Tensor, torch.Tensor] | None = None  # CSR (offsets [U+1], items)
        self._index, self._index_key = None, None  # InnerProductIndex, the item table it was built from

    # ------------------------------------------------------------------ ids and histories

    def set_ids(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> None:
        """Raw ids of users ``0..U-1`` and items (``item_ids[0]`` is padding), for :meth:`recommend`."""
        if len(user_ids) != self.num_users or len(item_ids) != self.num_items + 1:
            raise ValueError(f"got {len(user_ids)} user ids and {len(item_ids)} item ids (padding included) for a "
                             f"model of {self.num_users} users and {self.num_items} items (+1 padding)")
        self.set_item_ids(item_ids)
        self.set_user_ids(user_ids)

    def set_histories(self, sequences: Sequence[np.ndarray]) -> None:
        """Each known user's time-ordered items, for ``recommend`` without a history."""
        if len(sequences) != self.num_users:
            raise ValueError(f"got {len(sequences)} histories for {self.num_users} users")
        kept = [np.asarray(s, dtype=np.int64) for s in sequences]
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in kept])])
        self._histories = (torch.from_numpy(offsets), torch.from_numpy(np.concatenate(kept) if kept else offsets[:0]))

    def stored_history(self, user: int) -> np.ndarray:
        """The stored history (:meth:`set_histories`) of user index ``user``."""
        if self._histories is None:
            raise ValueError("this CLLM4Rec stores no user histories; give each user a history or call set_histories")
        offsets, flat = self._histories
        return flat[offsets[user]:offsets[user + 1]].numpy()

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
        hidden = run_decoder(self.llm, self.in_proj(tokens), mask)
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

    @torch.no_grad()
    def query(self, histories: Sequence[np.ndarray], users: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Query vectors [B, d]: the projected state after each history's last item.

        Args:
            histories: B time-ordered arrays of item indices (may be empty: the user token alone).
            users: [B] user indices, or ``None`` (every row the anonymous user); an entry of -1 is
                also the anonymous user.
        """
        if any(len(h) and (np.min(h) < 1 or np.max(h) > self.num_items) for h in histories):
            raise ValueError(f"histories hold item indices outside 1..{self.num_items}")
        items = right_pad(histories, self.max_history)
        last = torch.tensor([min(len(h), self.max_history) for h in histories])
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
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Float32 scores [B, N+1] of every item after each history (see :meth:`query`); column 0 is -inf."""
        return self.logits(self.query(histories, users)).float()

    # ------------------------------------------------------------------ serving

    def build_index(self, kind: str = "flat", nlist: int | None = None, nprobe: int = 8) -> InnerProductIndex:
        """(Re)builds the faiss index over the item embeddings (see :class:`genrec.retrieval.InnerProductIndex`)."""
        vectors = self.item_emb.weight.detach()[1:].float().cpu().contiguous().numpy()
        self._index, self._index_key = InnerProductIndex(vectors, kind, nlist, nprobe), self._embedding_key()
        return self._index

    def _embedding_key(self) -> tuple:
        weight = self.item_emb.weight
        return weight.data_ptr(), weight._version  # changes with every in-place update (optimizer, load)

    @torch.no_grad()
    def recommend_indices(self, histories: Sequence[np.ndarray], k: int = 10, users: np.ndarray | None = None,
                          exclude_history: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices [B, k] and float32 scores [B, k] from the faiss index (built when missing or stale).

        Args:
            histories: B arrays of item indices.
            k: list length, 1..N.
            users: [B] user indices (-1: anonymous) or ``None``.
            exclude_history: leave out items of the history (fewer than k remain: padded with -1 / -inf).
        """
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in 1..{self.num_items} (the number of items), got {k}")
        if self._index is None or self._index_key != self._embedding_key():
            self.build_index()
        queries = self.query(histories, users).float().cpu().numpy()
        return self._index.search(queries, k, histories if exclude_history else None)

    def recommend(self, histories: Sequence[Sequence[str] | None] | None = None, k: int = 10,
                  users: Sequence[str | None] | None = None,
                  exclude_history: bool = True) -> list[list[tuple[str, float]]]:
        """Top-k ``(raw item id, score)`` pairs per user, best first, for known users, histories, or both.

        Args:
            histories: one list of raw item ids per user, oldest first; an entry ``None`` (or
                ``histories=None``) takes a known user's stored history (:meth:`set_histories`; the
                trainer stores every known interaction).
            k: list length.
            users: raw user ids the model was trained with, one per history; an entry ``None`` (or
                ``users=None``) is a user the model never saw (the anonymous user token).
            exclude_history: leave out items of the history.
        """
        if histories is None and users is None:
            raise ValueError("recommend needs histories of item ids, user ids, or both")
        histories = [None] * len(users) if histories is None else as_histories(histories)
        if not histories:
            raise ValueError("recommend got no histories and no users; give one list of item ids or one known user "
                             "per recommendation list")
        if users is not None and len(users) != len(histories):
            raise ValueError(f"{len(users)} users for {len(histories)} histories; give one user per history")
        rows = [-1 if users is None or users[b] is None else self.user_index(users[b]) for b in range(len(histories))]
        indices = []
        for b, history in enumerate(histories):
            if isinstance(history, (str, bytes)) or (history is None and rows[b] < 0):
                raise ValueError(f"history {b} is {'None without a known user' if history is None else 'a string'}; "
                                 "give a list of item ids, a known user, or both")
            indices.append(self.stored_history(rows[b]) if history is None
                           else np.array([self.item_index(raw) for raw in history], dtype=np.int64))
        items, scores = self.recommend_indices(indices, k, np.array(rows, dtype=np.int64), exclude_history)
        return [[(self.item_ids[i], float(s)) for i, s in zip(row_items, row_scores) if i > 0]
                for row_items, row_scores in zip(items.tolist(), scores.tolist())]

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``<folder>/cllm4rec.safetensors`` (atomically): the settings and raw ids as metadata;
        the tables, projections and every LLM weight training changed (all of a random LLM); histories."""
        if self.user_ids is None:
            raise ValueError("this CLLM4Rec has no raw ids; call set_ids(user_ids, item_ids) first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: value for name, value in self.state_dict().items() if name in self._saved}
        if self._histories is not None:
            tensors["histories.offsets"], tensors["histories.items"] = self._histories
        save_tensors(folder / WEIGHTS, tensors, {"settings": self.settings, "user_ids": self.user_ids,
                                                  "item_ids": self.item_ids})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CLLM4Rec:
        """Loads a folder written by :meth:`save_pretrained` (weights from safetensors only), in eval mode."""
        path = Path(folder) / WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a saved CLLM4Rec (no {WEIGHTS}); save one with save_pretrained")
        tensors, meta = load_tensors(path)
        if "settings" not in meta:
            raise ValueError(f"{path} has no CLLM4Rec settings; it was not written by CLLM4Rec.save_pretrained")
        model = cls(**meta["settings"])  # rebuilds the LLM (pretrained weights, LoRA structure), then loads
        offsets, items = tensors.pop("histories.offsets", None), tensors.pop("histories.items", None)
        missing = model._saved - set(tensors)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)[:3]}; it was written for another model or config")
        model.load_state_dict(tensors, strict=False)
        if offsets is not None:
            model._histories = (offsets, items)
        model.set_ids(meta["user_ids"], meta["item_ids"])
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()


def _bpr(query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean ``-log sigmoid(<q, p> - <q, n_k>)`` over rows and negatives; q, p [M, d], n [M, K, d]."""
    pos = (query * positive).sum(-1, keepdim=True)  # [M, 1]
    neg = torch.einsum("md,mkd->mk", query, negative)  # [M, K]
    return -F.logsigmoid(pos - neg).mean()

