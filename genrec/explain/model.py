"""RecExplainer: a causal LLM trained to imitate a target recommender, reading its vectors or its text.

RecExplainer (Lei et al., KDD 2024, arXiv 2311.10947; RecAI) aligns an LLM to a trained recommender so
that it can explain it. Three ways the LLM sees a user and an item (``mode``):

* ``behaviour``: all text; the user is the titles of the recent history, an item its title;
* ``intention``: the user is a ``<user>`` placeholder that carries the recommender's user vector, an
  item a ``<item>`` placeholder carrying its item vector (here after the item's title, so that answers
  can name titles);
* ``hybrid``: both, the placeholders and the history titles.

Each vector goes through an MLP connector (rec-dim -> D/2 -> GELU -> D, RecAI's) and is **added** to
the embedding of an anchor token (``" user"`` / ``" item"``) at its placeholder position. Placeholders
are token ids past the vocabulary (V, V + 1), routed by :func:`genrec.llm.soft_tokens.placeholder_embeds`,
the soft-token code this model shares with CLLM4Rec: the vocabulary and LM head are never resized.

Training: the answer tokens' cross-entropy (:func:`genrec.llm.finetune.causal_lm_loss` on the
``inputs_embeds``), the LLM tuned with LoRA (RecAI: r 16 on attention; ``tuning``), the connectors in
full, the recommender frozen (its vectors are inputs). Inference: candidate log-likelihoods
(:meth:`RecExplainer.continuation_scores`), trie-constrained beam search over item names
(:meth:`RecExplainer.generate_items`, :func:`genrec.decoding.causal_lm_beam_search` with the prompt's
embeddings) and free text (:meth:`RecExplainer.generate_text`, e.g. an explanation).

Shapes: B batch, L tokens, D LLM width, r recommender width, M placeholders of one kind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import gin
import torch
import torch.nn.functional as F
from torch import nn

from genrec.decoding import PrefixTrie, causal_lm_beam_search
from genrec.llm.finetune import IGNORE, causal_lm_loss, split_causal_lm
from genrec.llm.lora import apply_lora, lora_settings
from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm
from genrec.llm.soft_tokens import placeholder_embeds, word_embedding_std

__all__ = ["ITEM", "MODES", "RecExplainer", "USER"]

MODES = ("behaviour", "intention", "hybrid")
TUNINGS = ("lora", "full", "frozen")
USER, ITEM = "<user>", "<item>"
_MARKERS = re.compile(f"({re.escape(USER)}|{re.escape(ITEM)})")


def _connector(rec_dim: int, width: int, hidden: int, out_std: float) -> nn.Sequential:
    """RecAI's connector: Linear(r, hidden) -> GELU -> Linear(hidden, D); outputs start near ``out_std``."""
    mlp = nn.Sequential(nn.Linear(rec_dim, hidden), nn.GELU(), nn.Linear(hidden, width))
    with torch.no_grad():
        mlp[2].weight.normal_(0.0, out_std / hidden ** 0.5 * 2.0)
        mlp[2].bias.zero_()
    return mlp


@gin.configurable(denylist=["rec_dim"])
class RecExplainer(nn.Module):
    """A causal LLM with ``<user>`` / ``<item>`` soft tokens from a recommender (module docstring).

    Args:
        rec_dim: r, width of the recommender's user and item vectors (from the target model).
        mode: ``behaviour``, ``intention`` or ``hybrid``.
        pretrained_path: the LLM (bundled SmolLM2 by default, a folder or a hub id).
        tuning: ``lora`` (adapters; RecAI's choice), ``full`` or ``frozen`` (connectors only).
        lora: LoRA settings (``None``: :func:`genrec.llm.lora.lora_settings` as gin binds it).
        connector_hidden: hidden width of the connectors (``None``: D / 2, RecAI's).
        dtype: LLM weight dtype.
        random_init: the LLM's architecture with random weights (tests, ablation).
    """

    def __init__(self, rec_dim: int, mode: str = "intention", pretrained_path: str = BUNDLED_LLM,
                 tuning: str = "lora", lora: dict | None = None, connector_hidden: int | None = None,
                 dtype: str = "float32", random_init: bool = False):
        super().__init__()
        if mode not in MODES or tuning not in TUNINGS:
            raise ValueError(f"RecExplainer.mode {mode!r} / tuning {tuning!r} cannot work; use a mode of "
                             f"{', '.join(MODES)} and a tuning of {', '.join(TUNINGS)}")
        if tuning == "frozen" and mode == "behaviour":
            raise ValueError("RecExplainer.tuning = 'frozen' trains only the connectors, which the behaviour mode "
                             "does not have; use tuning 'lora' or 'full'")
        if rec_dim < 1:
            raise ValueError(f"RecExplainer.rec_dim must be >= 1, got {rec_dim}")
        self.mode, self.rec_dim = mode, rec_dim
        llm, self.tokenizer = load_causal_lm(pretrained_path, dtype, random_init)
        embeddings = llm.get_input_embeddings()
        width, vocab = embeddings.embedding_dim, embeddings.num_embeddings
        self.user_token, self.item_token = vocab, vocab + 1
        self.anchors = {self.user_token: self._first_token(" user"), self.item_token: self._first_token(" item")}
        std = word_embedding_std(llm)
        hidden = connector_hidden or width // 2
        self.connectors = nn.ModuleDict() if mode == "behaviour" else nn.ModuleDict(
            {"user": _connector(rec_dim, width, hidden, std), "item": _connector(rec_dim, width, hidden, std)})
        for p in llm.parameters():
            p.requires_grad_(tuning == "full")
        lora = lora_settings() if lora is None else lora  # read even when unused: a config may switch tuning
        if tuning == "lora":
            llm = apply_lora(llm, lora, task_type="CAUSAL_LM")
        self.llm = llm
        self.settings = dict(rec_dim=rec_dim, mode=mode, pretrained_path=pretrained_path, tuning=tuning,
                             connector_hidden=hidden, dtype=dtype, random_init=random_init)

    def _first_token(self, text: str) -> int:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][0]

    # ------------------------------------------------------------------ text and embeddings

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with each ``<user>`` / ``<item>`` marker as its placeholder id."""
        ids = []
        for piece in _MARKERS.split(text):
            if piece == USER:
                ids.append(self.user_token)
            elif piece == ITEM:
                ids.append(self.item_token)
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    def embed(self, input_ids: torch.Tensor, user_vectors: torch.Tensor | None = None,
              item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings [B, L, D]; the placeholders get their connector's output added, in row-major order.

        Args:
            input_ids: [B, L] with placeholder ids (:meth:`encode`).
            user_vectors: [M_user, r], one per ``<user>`` position; item_vectors: [M_item, r] likewise.
        """
        has_markers = bool((input_ids >= self.user_token).any())
        if self.mode == "behaviour" or not has_markers:
            if has_markers:
                raise ValueError("a behaviour-mode RecExplainer got <user>/<item> placeholders; render its prompts "
                                 "as text only")
            return self.llm.get_input_embeddings()(input_ids)
        device = self.llm.get_input_embeddings().weight.device
        vectors = {}
        for token, name, given in ((self.user_token, "user", user_vectors), (self.item_token, "item", item_vectors)):
            if given is not None and len(given):
                vectors[token] = self.connectors[name](given.to(device).float())
        return placeholder_embeds(self.llm.get_input_embeddings(), input_ids, self.anchors, vectors)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                user_vectors: torch.Tensor | None = None,
                item_vectors: torch.Tensor | None = None) -> tuple[None, torch.Tensor]:
        """``(None, mean cross-entropy of the labelled answer tokens)``; see :meth:`embed` for the vectors."""
        embeds = self.embed(input_ids, user_vectors, item_vectors)
        return None, causal_lm_loss(self.llm, input_ids, labels, attention_mask, inputs_embeds=embeds)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def continuation_scores(self, prompt: list[int], continuations: Sequence[list[int]],
                            user_vectors: torch.Tensor | None = None,
                            item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Float [C]: mean token log-probability of each continuation after one prompt (a batch of C rows)."""
        count = len(continuations)
        sequences = [prompt + list(c) for c in continuations]
        width = max(map(len, sequences))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in sequences])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in sequences])
        repeat = lambda v: None if v is None else v.repeat(count, 1)  # noqa: E731 -- same vectors in each row
        device = self.llm.get_input_embeddings().weight.device
        embeds = self.embed(ids.to(device), repeat(user_vectors), repeat(item_vectors))
        decoder, head = split_causal_lm(self.llm)
        hidden = decoder(inputs_embeds=embeds, attention_mask=mask.to(device), use_cache=False).last_hidden_state
        rows = torch.tensor([b for b, c in enumerate(continuations) for _ in c], device=device)
        positions = torch.tensor([len(prompt) - 1 + k for c in continuations for k in range(len(c))], device=device)
        tokens = torch.tensor([t for c in continuations for t in c], device=device)
        log_probs = F.log_softmax(head(hidden[rows, positions]).float(), dim=-1)  # only the scored rows
        token_lp = log_probs.gather(1, tokens[:, None])[:, 0]
        scores = torch.zeros(count, device=device).index_add_(0, rows, token_lp)
        lengths = torch.tensor([len(c) for c in continuations], device=device)
        return (scores / lengths).cpu()

    def _left_padded(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return ids, mask

    @torch.no_grad()
    def generate_items(self, prompts: Sequence[list[int]], trie: PrefixTrie, num_beams: int,
                       user_vectors: torch.Tensor | None = None,
                       item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """LongTensor [B, K]: trie values (items) of the K best constrained beams after each prompt."""
        ids, mask = self._left_padded(prompts)
        device = self.llm.get_input_embeddings().weight.device
        ids, mask = ids.to(device), mask.to(device)
        embeds = self.embed(ids, user_vectors, item_vectors)
        values, _ = causal_lm_beam_search(self.llm, ids, mask, trie, num_beams, self.tokenizer.pad_token_id,
                                          prompt_embeds=embeds)
        return values.cpu()

    @torch.no_grad()
    def generate_text(self, prompt: list[int], user_vectors: torch.Tensor | None = None,
                      item_vectors: torch.Tensor | None = None, max_new_tokens: int = 60) -> str:
        """Greedy free text after one prompt (e.g. an explanation), special tokens removed."""
        ids, mask = self._left_padded([prompt])
        device = self.llm.get_input_embeddings().weight.device
        embeds = self.embed(ids.to(device), user_vectors, item_vectors)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask.to(device), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def training_example(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """``(ids, labels)``: prompt + answer + end token, the loss on the answer and the end token only."""
        prompt_ids, answer_ids = self.encode(prompt), self.encode(answer) + [self.tokenizer.eos_token_id]
        return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids
