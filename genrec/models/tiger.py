"""TIGER: generative retrieval over semantic IDs (Rajput et al., NeurIPS 2023, arXiv 2305.05065).

A small T5 encoder-decoder, trained from scratch, reads a user's recent items as semantic-ID tokens
and writes the next item's semantic ID, one code per decoding step:

    encoder:  [pad ... pad] <user bucket> c0(i1) c1(i1) ... cC-1(i1) ... c0(in) ... cC-1(in)
    decoder:  <eos> -> c0(target) -> c1(target) -> ... -> cC-1(target)

Vocabulary (V = 2 + sum(codebook sizes) + user buckets): ``0`` pad, ``1`` eos (also the decoder
start), one token per (level, code) from ``SemanticIDs.token_ids(2)``, then one token per user hash
bucket (the paper hashes user ids into 2,000 buckets; here ``crc32(raw user id) % user_buckets``,
stable across processes). The history is left-padded, the user token sits right before the first
item, and the most recent ``max_history`` items are kept (20 in the paper). The architecture is the
paper's: 4 + 4 layers, d_model 128, 6 heads of 64, feed-forward 1024 (ReLU), dropout 0.1, T5
relative position buckets; a Hugging Face ``T5ForConditionalGeneration`` with random
initialisation, so ``save_pretrained`` / ``from_pretrained`` / ``generate`` work as usual.

Encoder attention: ``bidirectional`` (the paper) trains one (history -> next item) example per forward
pass; ``causal`` masks each encoder position to itself and the positions before it, so one pass over
a window of items trains every target of the window (the decoder of the target after item j
cross-attends to the encoder positions up to item j only; at inference it sees the whole history as
usual). With a causal encoder, Hugging Face ``generate`` needs the encoder states from
:meth:`TIGER.encode` (``encoder_outputs=``), since T5's own encoder call is bidirectional.

Training loss: cross-entropy of each of the C target codes, with the softmax of level ``c`` taken
over level ``c``'s codes only (the other tokens can never appear there), optionally label-smoothed
over those codes.

Decoding (:meth:`TIGER.recommend_indices`): deterministic beam search constrained by a prefix trie
over every catalogue item's code sequence (:func:`genrec.decoding.constrained_beam_search`), beam
20 by default, so every recommendation is a distinct catalogue item; beams are ranked by the sum of
their level log-probabilities. The encoder runs once per user; the first decoding step runs once per
user too, and its self- and cross-attention KV cache is then copied to the K beams and, at later
steps, its self-attention part reordered by ``beam_parents`` (the cross-attention part is identical
for all beams of a user, so it is never reordered).

A saved model (:meth:`TIGER.save_pretrained`) is one folder: ``t5/`` (config + safetensors),
``semantic_ids.json`` (the item <-> code table it decodes into), ``tiger.json`` (settings, user ids).

Shapes: B users, H history items, C code levels, L encoder length, K beams, V vocabulary, D width.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import gin
import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from genrec.data.padding import left_pad
from genrec.decoding import cache_argument, constrained_beam_search
from genrec.io import atomic_write_text
from genrec.models.base import Recommender, as_histories
from genrec.semantic_ids import SemanticIDs, level_token_starts

__all__ = ["TIGER", "additive_mask", "user_bucket"]

PAD, EOS = 0, 1
FIRST_CODE = 2  # token id of code 0 of level 0
SETTINGS = "tiger.json"


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    """An additive float32 attention mask: 0 where ``allowed``, the most negative float elsewhere."""
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, torch.finfo(torch.float32).min)


def user_bucket(raw_user_id: str, buckets: int) -> int:
    """The hash bucket of a raw user id: ``crc32(id) % buckets`` (stable, unlike Python's ``hash``)."""
    return zlib.crc32(str(raw_user_id).encode("utf-8")) % buckets


@gin.configurable(denylist=["semantic_ids"])
class TIGER(Recommender):
    """T5 encoder-decoder from semantic-ID histories to the next item's semantic ID.

    Args:
        semantic_ids: code tuples aligned with item indices (row 0 padding); they fix C and the
            code vocabulary.
        num_layers: encoder layers.
        num_decoder_layers: decoder layers.
        d_model: D, token embedding and hidden width.
        num_heads: attention heads.
        d_kv: width of each head (``num_heads * d_kv`` need not equal D, as in T5).
        d_ff: feed-forward width.
        dropout: dropout rate everywhere (T5's ``dropout_rate``).
        user_buckets: number of hashed user tokens; 0: no user token.
        max_history: most recent history items the encoder reads.
        num_beams: beam width of :meth:`recommend_indices` (at least the requested k).
        label_smoothing: label smoothing of the per-level cross-entropy.
        encoder_input: ``codes`` (the paper: one encoder position per code of every history item)
            or ``items`` (one position per history item, the sum of its code embeddings: C times
            shorter encoder inputs, the same output side).
        decode_batch_size: users decoded at once (the KV cache holds K rows per user).
        embedding_init_std: std of the token embeddings' (input and tied output) initialisation; None:
            T5's 1.0 (smaller ones trained far worse on ml-100k; README, TIGER).
        item_input: with ``encoder_input = "items"``, also add a learned per-item token to each history
            position (N more input-only tokens, never decoded), as SASRec's item embeddings do; the
            output side stays semantic IDs.
    """

    generative = True

    def __init__(self, semantic_ids: SemanticIDs, num_layers: int = 4, num_decoder_layers: int = 4,
                 d_model: int = 128, num_heads: int = 6, d_kv: int = 64, d_ff: int = 1024, dropout: float = 0.1,
                 user_buckets: int = 2000, max_history: int = 20, num_beams: int = 20,
                 label_smoothing: float = 0.0, encoder_input: str = "codes", encoder_attention: str = "bidirectional",
                 decode_batch_size: int = 32, embedding_init_std: float | None = None, item_input: bool = False):
        super().__init__()
        if not isinstance(semantic_ids, SemanticIDs):
            raise TypeError(f"TIGER needs SemanticIDs, got {type(semantic_ids).__name__}")
        for name, value, low in (("max_history", max_history, 1), ("num_beams", num_beams, 1),
                                 ("user_buckets", user_buckets, 0), ("decode_batch_size", decode_batch_size, 1)):
            if value < low:
                raise ValueError(f"TIGER.{name} must be >= {low}, got {value}")
        if encoder_input not in ("codes", "items"):
            raise ValueError(f"TIGER.encoder_input must be 'codes' or 'items', got {encoder_input!r}")
        if encoder_attention not in ("bidirectional", "causal"):
            raise ValueError(f"TIGER.encoder_attention must be 'bidirectional' or 'causal', got {encoder_attention!r}")
        if item_input and encoder_input != "items":
            raise ValueError("TIGER.item_input needs TIGER.encoder_input = 'items' (one position per history item)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"TIGER.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.semantic_ids = semantic_ids
        self.code_vocab = int(sum(semantic_ids.codebook_sizes))
        self.first_user_token = FIRST_CODE + self.code_vocab
        self.first_item_token = self.first_user_token + user_buckets  # item i's input token: first_item_token + i - 1
        self.settings = dict(num_layers=num_layers, num_decoder_layers=num_decoder_layers, d_model=d_model,
                             num_heads=num_heads, d_kv=d_kv, d_ff=d_ff, dropout=dropout, user_buckets=user_buckets,
                             max_history=max_history, num_beams=num_beams, label_smoothing=label_smoothing,
                             encoder_input=encoder_input, encoder_attention=encoder_attention,
                             decode_batch_size=decode_batch_size, embedding_init_std=embedding_init_std,
                             item_input=item_input)
        self.config = T5Config(
            vocab_size=self.first_item_token + semantic_ids.num_items * item_input, d_model=d_model, d_kv=d_kv, d_ff=d_ff,
            num_layers=num_layers, num_decoder_layers=num_decoder_layers, num_heads=num_heads, dropout_rate=dropout,
            feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=EOS,
            tie_word_embeddings=True, use_cache=False)
        self.t5 = T5ForConditionalGeneration(self.config)
        if embedding_init_std is not None:
            if not embedding_init_std > 0:
                raise ValueError(f"TIGER.embedding_init_std must be > 0 or None, got {embedding_init_std}")
            torch.nn.init.normal_(self.t5.shared.weight, std=embedding_init_std)

        tokens = semantic_ids.token_ids(FIRST_CODE)
        tokens[0] = PAD
        levels, vocab = semantic_ids.num_levels, self.config.vocab_size
        level_mask = torch.zeros(levels, vocab, dtype=torch.bool)
        starts = level_token_starts(semantic_ids.codebook_sizes, FIRST_CODE)
        for level in range(levels):
            level_mask[level, starts[level]:starts[level + 1]] = True
        self.register_buffer("item_tokens", torch.from_numpy(tokens), persistent=False)  # [N+1, C]
        self.register_buffer("level_mask", level_mask, persistent=False)  # [C, V]
        self.level_starts = [int(x) for x in starts]  # level c's tokens are starts[c]:starts[c + 1]
        self.register_buffer("user_tokens", torch.zeros(0, dtype=torch.long), persistent=False)  # [U]
        self.trie = semantic_ids.trie(FIRST_CODE, vocab_size=vocab)
        self.set_item_ids(semantic_ids.item_ids)

    # ------------------------------------------------------------------ ids

    @property
    def num_levels(self) -> int:
        return self.semantic_ids.num_levels

    def set_user_ids(self, user_ids: Sequence[str]) -> None:
        """Names users 0..U-1 by their raw ids; their hash buckets become the user tokens."""
        super().set_user_ids(user_ids)
        buckets = self.settings["user_buckets"]
        tokens = [self.first_user_token + user_bucket(u, buckets) for u in self.user_ids] if buckets else []
        self.user_tokens = torch.tensor(tokens, dtype=torch.long, device=self.item_tokens.device)

    # ------------------------------------------------------------------ training

    def encoder_inputs(self, history: torch.Tensor, users: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The encoder's keyword inputs for left-padded item histories.

        ``encoder_input = "codes"`` (the paper): ``input_ids`` [B, L] with one token per history
        item's code (L = 1 + H * C); ``"items"``: ``inputs_embeds`` [B, L, D] with one position per
        history item, the sum of its code tokens' embeddings (L = 1 + H). Both with an
        ``attention_mask`` [B, L]; columns that are padding in every row are dropped.

        Args:
            history: LongTensor [B, H] of item indices, left-padded with 0.
            users: LongTensor [B] of user indices, or None (no user token).
        """
        history = history[:, -self.settings["max_history"]:]
        tokens = self._position_tokens(history)  # [B, P, T]
        if users is not None and self.settings["user_buckets"]:
            slot = (tokens[..., 0] == PAD).sum(1)  # after one more column: the position before the first item
            tokens = torch.cat([torch.full_like(tokens[:, :1], PAD), tokens], 1)
            tokens[torch.arange(len(tokens), device=tokens.device), slot] = self._user_position(users, tokens.shape[2])[:, 0]
        return self._inputs(tokens)

    def _position_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """Encoder tokens [B, P, T] of padded item indices [B, H]: T = C tokens summed at one position
        per item (``items``), or T = 1 token at each of the H * C positions (``codes``)."""
        tokens = self.item_tokens[items]  # [B, H, C]; padding rows are PAD
        if self.settings["item_input"]:
            own = torch.where(items > 0, self.first_item_token + items - 1, PAD)
            tokens = torch.cat([tokens, own[..., None]], -1)  # [B, H, C + 1]
        if self.settings["encoder_input"] == "codes":
            tokens = tokens.reshape(items.shape[0], -1, 1)
        return tokens

    def _user_position(self, users: torch.Tensor, width: int) -> torch.Tensor:
        """The user token's encoder position [B, 1, T] (PAD in the other T - 1 slots)."""
        if len(self.user_tokens) == 0:
            raise ValueError("TIGER got user indices but has no user ids; call set_user_ids(...) first")
        user = torch.full((len(users), 1, width), PAD, dtype=torch.long, device=users.device)
        user[:, 0, 0] = self.user_tokens[users]
        return user

    def _inputs(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """``input_ids`` or ``inputs_embeds`` and ``attention_mask`` of encoder tokens [B, P, T]; positions
        that are padding in every row (at either end) are dropped."""
        tokens = tokens[:, (tokens[..., 0] != PAD).any(0)]
        mask = tokens[..., 0] != PAD
        if self.settings["encoder_input"] == "codes":
            return {"input_ids": tokens[..., 0], "attention_mask": mask}
        return {"inputs_embeds": self.t5.shared(tokens).sum(2), "attention_mask": mask}

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder states [B, P, D] of :meth:`encoder_inputs`; with ``encoder_attention = "causal"`` each
        position sees only itself and the positions before it."""
        if self.settings["encoder_attention"] == "causal":
            mask = inputs["attention_mask"]
            causal = torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool, device=mask.device).tril()
            inputs = {**inputs, "attention_mask": additive_mask(causal & mask[:, None, :])[:, None]}
        return self.t5.get_encoder()(**inputs).last_hidden_state

    def level_log_probs(self, logits: torch.Tensor, level: int | None = None) -> torch.Tensor:
        """Log-softmax over each level's codes only: logits [..., C, V] (or [R, V] at ``level``)."""
        mask = self.level_mask if level is None else self.level_mask[level]
        return logits.float().masked_fill(~mask, float("-inf")).log_softmax(-1)

    def forward(self, history: torch.Tensor | None = None, target: torch.Tensor | None = None,
                user: torch.Tensor | None = None, items: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs [R, C] of R target items' codes and the mean per-code loss.

        Either one target per example (:class:`genrec.data.generative.NextItemPrefixes`):
            history: LongTensor [B, H], left-padded item indices.
            target: LongTensor [B], the next item (R = B).
            user: LongTensor [B] user indices, or None.
        or, with ``encoder_attention = "causal"``, every target of a window at once
        (:class:`genrec.data.windows.SequenceWindows` with ``with_user=True``):
            items: LongTensor [B, L], right-padded item indices.
            labels: LongTensor [B, L + 1]: label j is the item after the user and items 0..j-1, -100 where
                there is none (R = the labelled positions; label 0 needs the user token).
            users: LongTensor [B] user indices.
        The decoder of the target at label j cross-attends to the encoder positions of the user and
        items 0..j-1 only, which the causal encoder computed without seeing later items.
        """
        if items is not None:
            return self._window_loss(items, labels, users)
        inputs = self.encoder_inputs(history, user)
        return self._code_loss(self.encode(inputs), inputs["attention_mask"], target)

    def _window_loss(self, items: torch.Tensor, labels: torch.Tensor,
                     users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.settings["encoder_attention"] != "causal":
            raise ValueError("window batches need TIGER.encoder_attention = 'causal'; a bidirectional encoder "
                             "trains on NextItemPrefixes (history, target) examples")
        if items.shape[1] > self.settings["max_history"] or labels.shape[1] != items.shape[1] + 1:
            raise ValueError(f"windows of {items.shape[1]} items with {labels.shape[1]} labels; TIGER.max_history is "
                             f"{self.settings['max_history']}: cut windows of at most that many items, one label more")
        tokens = self._position_tokens(items)
        width = self.num_levels if self.settings["encoder_input"] == "codes" else 1
        labels = labels.clone()
        prefix = int(self.settings["user_buckets"] > 0)
        if prefix:
            tokens = torch.cat([self._user_position(users, tokens.shape[2]), tokens], 1)
        else:
            labels[:, 0] = -100  # nothing to predict the first item from
        inputs = self._inputs(tokens)
        encoded = self.encode(inputs)  # [B, P, D]
        # One decoder row per window: its M labelled slots' C teacher-forced tokens side by side (T = M * C)
        # under a block-diagonal causal mask (T5's relative position bias only sees distances inside a
        # block), the target after item j cross-attending to the user and items 0..j-1 only: each target's
        # log-probs are those of :meth:`_code_loss` on it alone; encoder states are projected once per window.
        levels, labelled = self.num_levels, labels != -100  # [B, S]
        count = labelled.sum(1)
        slots = labelled.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :int(count.max())]  # [B, M]
        packed = torch.arange(slots.shape[1], device=items.device) < count[:, None]  # [B, M]: a real target
        codes = self.item_tokens[labels.gather(1, slots).clamp(min=0)]  # [B, M, C]; padding slots decode PAD
        decoder_ids = torch.cat([torch.full_like(codes[..., :1], EOS), codes[..., :-1]], -1).reshape(len(codes), -1)
        position = torch.arange(decoder_ids.shape[1], device=items.device)
        block = position // levels
        own = (block[:, None] == block[None, :]) & (position[None, :] <= position[:, None])  # [T, T]
        seen = prefix + slots[:, block] * width  # [B, T]: encoder positions the token's target may see
        visible = torch.arange(encoded.shape[1], device=items.device) < seen[..., None]  # [B, T, P]
        hidden = self._decode(decoder_ids, encoded, additive_mask(visible)[:, None], additive_mask(own)[None, None])
        return self._target_log_probs(hidden.reshape(*codes.shape, -1)[packed], codes[packed])

    def _code_loss(self, encoded: torch.Tensor, encoder_mask: torch.Tensor,
                   target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs [R, C] of targets' codes [R] and their mean negative (the loss) given
        encoder states [R, P, D] and their mask (2D [R, P] or additive [R, 1, 1, P])."""
        codes = self.item_tokens[target]  # [R, C]
        decoder_ids = torch.cat([torch.full_like(codes[:, :1], EOS), codes[:, :-1]], 1)
        return self._target_log_probs(self._decode(decoder_ids, encoded, encoder_mask), codes)

    def _decode(self, decoder_ids: torch.Tensor, encoded: torch.Tensor, encoder_mask: torch.Tensor,
                self_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's last hidden states [R, T, D] of teacher-forced tokens [R, T] (causal self-attention,
        or the additive ``self_mask`` [1, 1, T, T]), scaled as T5 scales them before its output layer."""
        hidden = self.t5.get_decoder()(input_ids=decoder_ids, attention_mask=self_mask, encoder_hidden_states=encoded,
                                       encoder_attention_mask=encoder_mask, use_cache=False).last_hidden_state
        if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
            hidden = hidden * self.config.d_model ** -0.5  # as T5ForConditionalGeneration does before its lm_head
        return hidden

    def _target_log_probs(self, hidden: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs [R, C] of target codes (tokens [R, C]) from decoder states [R, C, D], and the loss: level
        c's states times level c's code embeddings only (the rows of T5's tied output layer that level c
        can emit), the log-probs of :meth:`level_log_probs` at a fraction of the cost."""
        weight, starts = self.t5.get_output_embeddings().weight, self.level_starts
        smoothing, log_probs, losses = self.settings["label_smoothing"], [], []
        for level in range(codes.shape[1]):
            level_log_probs = (hidden[:, level] @ weight[starts[level]:starts[level + 1]].T).float().log_softmax(-1)
            picked = level_log_probs.gather(-1, (codes[:, level] - starts[level])[:, None]).squeeze(-1)  # [R]
            log_probs.append(picked)
            losses.append((1 - smoothing) * -picked - smoothing * level_log_probs.mean(-1) if smoothing else -picked)
        return torch.stack(log_probs, 1), torch.stack(losses, 1).mean()

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def recommend_indices(self, histories: Sequence[np.ndarray], k: int = 10,
                          users: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k distinct catalogue items [B, k] and their scores [B, k] (sums of code log-probs).

        Args:
            histories: one array of item indices per user, oldest first, each non-empty.
            k: list length, at most the number of items; the beam width is ``max(k, num_beams)``.
            users: user indices [B] for the user tokens, or None (no user token).
        """
        histories = as_histories(histories)
        for b, history in enumerate(histories):
            if isinstance(history, (str, bytes)) or len(history) == 0:
                raise ValueError(f"history {b} is {'a string' if isinstance(history, (str, bytes)) else 'empty'}; "
                                 "TIGER needs at least one item of history per user")
        if not 1 <= k <= self.semantic_ids.num_items:
            raise ValueError(f"k must be in 1..{self.semantic_ids.num_items} (the number of items), got {k}")
        if users is not None and len(users) != len(histories):
            raise ValueError(f"{len(users)} users for {len(histories)} histories; give one user per history")
        device = self.item_tokens.device
        self.trie = self.trie.to(device)
        beams, chunk = max(k, self.settings["num_beams"]), self.settings["decode_batch_size"]
        items, scores = [], []
        for start in range(0, len(histories), chunk):
            history = left_pad(histories[start:start + chunk], self.settings["max_history"]).to(device)
            user = None if users is None else torch.as_tensor(np.asarray(users[start:start + chunk]),
                                                               dtype=torch.long, device=device)
            if history.max() > self.semantic_ids.num_items or history.min() < 0:
                raise ValueError(f"histories hold item indices outside 1..{self.semantic_ids.num_items}")
            found, score = self._beam_search(self.encoder_inputs(history, user), beams)
            items.append(found[:, :k])
            scores.append(score[:, :k])
        return torch.cat(items), torch.cat(scores)

    def _beam_search(self, inputs: dict[str, torch.Tensor], beams: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search for a batch of encoder inputs: items [B, K], scores [B, K]."""
        mask = inputs["attention_mask"]
        batch = mask.shape[0]
        encoded = self.encode(inputs)  # [B, L, D]
        cache, cache_name = EncoderDecoderCache(DynamicCache(), DynamicCache()), cache_argument(self.t5)
        start = torch.full((batch, 1), EOS, dtype=torch.long, device=mask.device)
        out = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=encoded), attention_mask=mask,
                      decoder_input_ids=start, use_cache=True, **{cache_name: cache})  # fills the cache in place
        first = self.level_log_probs(out.logits[:, -1], 0).repeat_interleave(beams, 0)  # [B*K, V]
        expanded = BaseModelOutput(last_hidden_state=encoded.repeat_interleave(beams, 0))
        mask = mask.repeat_interleave(beams, 0)

        def step(tokens, state, parents):
            if parents is None:  # t = 0: computed above, once per user
                return first, state
            t = tokens.shape[1]
            if t == 1:  # one cache row per user -> one per beam (all beams of a user share the row)
                cache.reorder_cache(parents // beams)
            else:
                cache.self_attention_cache.reorder_cache(parents)
            last = tokens[:, -1:].clamp(min=PAD)  # finished or dead beams (-1) feed padding
            out = self.t5(encoder_outputs=expanded, attention_mask=mask, decoder_input_ids=last, use_cache=True,
                          **{cache_name: cache})
            return self.level_log_probs(out.logits[:, -1], t), state

        values, scores, _ = constrained_beam_search(step, self.trie, batch, beams)
        return values, scores

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``t5/`` (config + safetensors), ``semantic_ids.json`` and ``tiger.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.t5.save_pretrained(folder / "t5")
        self.semantic_ids.save(folder / "semantic_ids.json")
        atomic_write_text(folder / SETTINGS, json.dumps({**self.settings, "user_ids": self.user_ids}) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TIGER:
        """Loads a folder written by :meth:`save_pretrained` (weights from safetensors only), in eval mode.

        Raises:
            FileNotFoundError: if ``folder`` is not a saved TIGER.
            ValueError: if the T5 config's vocabulary disagrees with the semantic IDs and settings.
        """
        folder = Path(folder)
        if not (folder / SETTINGS).is_file():
            raise FileNotFoundError(f"{folder} is not a saved TIGER (no {SETTINGS}); save one with save_pretrained")
        settings = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
        user_ids = settings.pop("user_ids", None)
        ids = SemanticIDs.read(folder / "semantic_ids.json")
        config = T5Config.from_pretrained(folder / "t5")
        expected = (FIRST_CODE + sum(ids.codebook_sizes) + settings["user_buckets"]
                    + ids.num_items * settings.get("item_input", False))
        if config.vocab_size != expected:
            raise ValueError(
                f"{folder / 't5' / 'config.json'} has vocab_size {config.vocab_size}, but {folder / 'semantic_ids.json'} "
                f"({ids.num_levels} levels, codebook sizes {ids.codebook_sizes}) and user_buckets "
                f"{settings['user_buckets']} in {folder / SETTINGS} need {expected} (pad, eos, one token per code, "
                "one per user bucket, one per item with item_input); the folder mixes files of different models")
        model = cls(ids, **settings)
        model.t5 = T5ForConditionalGeneration.from_pretrained(folder / "t5")
        model.config = model.t5.config
        if user_ids is not None:
            model.set_user_ids(user_ids)
        return model.eval()

