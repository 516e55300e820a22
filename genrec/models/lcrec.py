"""LC-Rec: a causal LLM that recommends by generating an item's semantic-ID tokens.

LC-Rec (Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation", ICDE 2024, arXiv 2311.09049) adds one token per (level, code) of the items'
semantic IDs to an LLM's vocabulary, ``<C{level}_{code}>``, and fine-tunes it on instructions
written in those tokens (:mod:`genrec.llm.tasks`). To recommend, the model reads a user's history
as code tokens and beam-searches the next item's codes.

Differences from the original code, on purpose:

* Decoding is constrained by a prefix trie over the items' full token sequences (codes followed
  by the eos token), so every beam is a catalogue item and beams are distinct items; the original
  only whitelists "any code of this level" and can emit tuples that name no item.
* Beam search runs the prompt once per user and shares its KV cache across the K beams
  (:meth:`LCRec.generate` with ``method="beam"``, the default); ``method="hf"`` runs HF ``generate``
  with :class:`~genrec.decoding.TrieLogitsProcessor`. Both score a beam by the sum of its tokens'
  log-probabilities, end token included, and return the same items.
* New token rows can start at the mean input embedding of the title tokens of the items that use
  the code (``init="mean"``), not at the default random rows.
* LoRA (:meth:`LCRec.enable_lora`) trains the new token rows as well (and an untied output head),
  which LoRA on the projections alone would leave frozen.

A saved model (:meth:`save_pretrained`) is one folder: ``lcrec.json`` (settings), ``semantic_ids.json``,
and ``llm/`` (the fine-tuned LLM and its tokenizer, or the LoRA adapter over the named base).

Shapes: B batch, K beams, L prompt length, C code levels, V vocabulary, N items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.decoding import PrefixTrie, TrieLogitsProcessor, constrained_beam_search
from genrec.io import atomic_write_text
from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm, load_tokenizer
from genrec.llm.tasks import PromptFormat, seqrec_instruction
from genrec.semantic_ids import SemanticIDs

__all__ = ["LCRec", "code_token", "lora_settings"]

SETTINGS = "lcrec.json"
DECODERS = ("beam", "hf")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@gin.configurable
def lora_settings(r: int = 8, alpha: int = 32, dropout: float = 0.05,
                  target_modules: Sequence[str] = LORA_TARGETS) -> dict:
    """The LoRA arguments of :meth:`LCRec.enable_lora` (LC-Rec's: r 8, alpha 32, dropout 0.05, all projections)."""
    return dict(r=r, alpha=alpha, dropout=dropout, target_modules=list(target_modules))


def code_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level``: ``<C{level}_{code}>``."""
    return f"<C{level}_{code}>"


@gin.configurable(denylist=["settings"])
class LCRec(nn.Module):
    """A causal LLM with codebook tokens, trie-constrained generation and item recommendation.

    Args:
        pretrained_path: ``bundled:smollm2-135m-instruct`` (default), a local folder or a hub id.
        dtype: weight dtype, ``float32`` (default), ``bfloat16`` or ``float16``.
        random_init: the pretrained architecture and tokenizer with random weights (ablation).
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        system_prompt: system message of chat-template prompts (``None``: the template's default).
        max_length: longest training or prompt sequence in tokens.
        max_history: most recent history items in a recommendation prompt.
        num_beams: default beams for :meth:`recommend` (at least the requested ``k``).
        decoder: ``beam`` (our batched beam search with a shared prompt cache) or ``hf``.
    """

    def __init__(self, pretrained_path: str = BUNDLED_LLM, dtype: str = "float32", random_init: bool = False,
                 gradient_checkpointing: bool = False, system_prompt: str | None = None, max_length: int = 512,
                 max_history: int = 20, num_beams: int = 20, decoder: str = "beam", settings: dict | None = None):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown LCRec.decoder {decoder!r}; use one of {', '.join(DECODERS)}")
        self.settings = dict(pretrained_path=pretrained_path, dtype=dtype, system_prompt=system_prompt,
                             max_length=max_length, max_history=max_history, num_beams=num_beams, decoder=decoder,
                             codebook_sizes=None, lora=None, **(settings or {}))
        self.llm, self.tokenizer = load_causal_lm(pretrained_path, dtype, random_init)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.llm.config.use_cache = False
        self.format = PromptFormat(self.tokenizer, system_prompt, max_length)
        self.semantic_ids: SemanticIDs | None = None
        self.item_ids: list[str] | None = None
        self.trie: PrefixTrie | None = None
        self._item_tokens: np.ndarray | None = None

    # ------------------------------------------------------------------ vocabulary and items

    @property
    def codebook_sizes(self) -> list[int] | None:
        return self.settings["codebook_sizes"]

    def add_codebook_tokens(self, num_codebooks: int, codebook_size: int | Sequence[int], init: str = "default",
                            item_codes: np.ndarray | None = None, item_texts: Sequence[str] | None = None) -> np.ndarray:
        """Adds ``<C{level}_{code}>`` for every level and code as single tokens; resizes the embeddings.

        Args:
            num_codebooks: C levels.
            codebook_size: codes per level (one int for all levels, or C ints).
            init: ``default`` (the model's resize initialisation) or ``mean``: each new row (input
                embedding, and output row when untied) is the mean embedding of the tokens of the
                texts of the items with that code at that level (rows of unused codes stay default).
            item_codes: [N, C] codes of items 1..N, for ``init="mean"``.
            item_texts: N texts of items 1..N, for ``init="mean"``.

        Returns:
            int64 [C, max size] token id of each (level, code), -1 where a level has fewer codes.
        """
        sizes = [int(codebook_size)] * num_codebooks if np.isscalar(codebook_size) else [int(v) for v in codebook_size]
        if len(sizes) != num_codebooks or min(sizes) < 1:
            raise ValueError(f"codebook_size must be one positive int or {num_codebooks} of them, got {codebook_size!r}")
        if self.codebook_sizes is not None:
            raise ValueError(f"codebook tokens are already added ({self.codebook_sizes}); build a new LCRec")
        if init not in ("default", "mean"):
            raise ValueError(f"unknown codebook token init {init!r}; use 'default' or 'mean'")
        tokens = [code_token(level, code) for level, size in enumerate(sizes) for code in range(size)]
        clash = [t for t in tokens if t in self.tokenizer.get_vocab()]
        if clash:
            raise ValueError(f"the tokenizer already has codebook tokens such as {clash[0]!r}")
        self.tokenizer.add_tokens(tokens, special_tokens=True)
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        start = ids[0]
        if ids != list(range(start, start + len(tokens))):
            raise RuntimeError("codebook tokens did not get consecutive ids")
        self.llm.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.settings.update(codebook_sizes=sizes, code_token_start=start)
        if init == "mean":
            if item_codes is None or item_texts is None:
                raise ValueError("init='mean' needs item_codes and item_texts")
            self._mean_init(np.asarray(item_codes), item_texts)
        return self.code_token_table()

    def code_token_table(self) -> np.ndarray:
        """int64 [C, max size]: token id of (level, code); -1 where a level has fewer codes."""
        sizes, start = self.codebook_sizes, self.settings["code_token_start"]
        table = np.full((len(sizes), max(sizes)), -1, dtype=np.int64)
        offsets = start + np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for level, size in enumerate(sizes):
            table[level, :size] = offsets[level] + np.arange(size)
        return table

    @torch.no_grad()
    def _mean_init(self, item_codes: np.ndarray, item_texts: Sequence[str]) -> None:
        embeddings = self.llm.get_input_embeddings().weight
        pieces = self.tokenizer(list(item_texts), add_special_tokens=False)["input_ids"]
        text_means = torch.stack([embeddings[torch.tensor(p or [self.tokenizer.eos_token_id])].float().mean(0)
                                  for p in pieces])  # [N, D]
        output = self.llm.get_output_embeddings()
        untied = output is not None and output.weight.data_ptr() != embeddings.data_ptr()
        table = self.code_token_table()
        for level in range(item_codes.shape[1]):
            codes = torch.as_tensor(item_codes[:, level])
            sums = torch.zeros(table.shape[1], text_means.shape[1]).index_add_(0, codes, text_means)
            counts = torch.bincount(codes, minlength=table.shape[1])
            used = torch.nonzero(counts).squeeze(1)
            rows = torch.as_tensor(table[level])[used]
            means = (sums[used] / counts[used, None]).to(embeddings.dtype)
            embeddings[rows] = means
            if untied:
                output.weight[rows] = means.to(output.weight.dtype)

    def set_items(self, semantic_ids: SemanticIDs, item_ids: Sequence[str]) -> None:
        """Attaches the items: their code tokens, the decoding trie and their raw ids.

        Args:
            semantic_ids: codes of every item; their codebook sizes must be the added tokens'.
            item_ids: raw item id per item index (``item_ids[0]`` is padding).
        """
        if self.codebook_sizes is None:
            raise ValueError("call add_codebook_tokens before set_items")
        if list(semantic_ids.codebook_sizes) != list(self.codebook_sizes):
            raise ValueError(f"semantic IDs have codebook sizes {semantic_ids.codebook_sizes} but the model's "
                             f"codebook tokens are {self.codebook_sizes}; build the model for these semantic IDs")
        if len(item_ids) != semantic_ids.num_items + 1:
            raise ValueError(f"{len(item_ids) - 1} item ids for {semantic_ids.num_items} items")
        self.semantic_ids, self.item_ids = semantic_ids, list(item_ids)
        self._item_lookup = {raw: i for i, raw in enumerate(self.item_ids) if i > 0}
        tokens = semantic_ids.token_ids(self.settings["code_token_start"])  # [N+1, C]
        self._item_tokens = tokens
        self.item_code_strings = [""] + ["".join(self.tokenizer.convert_ids_to_tokens(row.tolist()))
                                         for row in tokens[1:]]
        eos = np.full((len(tokens) - 1, 1), self.tokenizer.eos_token_id, dtype=np.int64)
        self.trie = PrefixTrie(np.hstack([tokens[1:], eos]), values=np.arange(1, len(tokens)),
                               vocab_size=len(self.tokenizer))

    def _require_items(self) -> None:
        if self.trie is None:
            raise ValueError("this LCRec has no items yet; call set_items(semantic_ids, item_ids) first")

    # ------------------------------------------------------------------ training

    def enable_lora(self, r: int = 8, alpha: int = 32, dropout: float = 0.05,
                    target_modules: Sequence[str] = LORA_TARGETS) -> None:
        """Wraps the LLM with LoRA adapters; new token rows and an untied output head stay trainable.

        Args:
            r: LoRA rank.
            alpha: LoRA scaling numerator (scale = alpha / r).
            dropout: dropout on the LoRA input.
            target_modules: module names that get adapters (LC-Rec: every attention and MLP projection).
        """
        from peft import LoraConfig, get_peft_model

        if self.codebook_sizes is None:
            raise ValueError("call add_codebook_tokens before enable_lora (the new rows must be trainable)")
        start, count = self.settings["code_token_start"], sum(self.codebook_sizes)
        embeddings, output = self.llm.get_input_embeddings(), self.llm.get_output_embeddings()
        tied = output is None or output.weight.data_ptr() == embeddings.weight.data_ptr()
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                            trainable_token_indices=list(range(start, start + count)),
                            modules_to_save=None if tied else ["lm_head"], task_type="CAUSAL_LM")
        self.llm = get_peft_model(self.llm, config)
        if self.gradient_checkpointing:  # checkpointed blocks need an input that requires grad
            self.llm.enable_input_require_grads()
        self.settings["lora"] = dict(r=r, alpha=alpha, dropout=dropout, target_modules=list(target_modules))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal-LM loss on the labelled (response) tokens.

        Args:
            input_ids, attention_mask: LongTensor [B, L], right-padded.
            labels: LongTensor [B, L], -100 where no loss is taken.

        Returns:
            (logits [B, L, V], mean cross-entropy over labelled tokens, or None without labels).
        """
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False)
        return out.logits, out.loss

    # ------------------------------------------------------------------ generation

    def prompts(self, histories: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Left-padded seqrec prompts (evaluation template) for histories of item indices."""
        self._require_items()
        max_history = self.settings["max_history"]
        instructions = []
        for b, history in enumerate(histories):
            history = np.asarray(history, dtype=np.int64)
            history = history[history > 0][-max_history:]
            if not len(history):
                raise ValueError(f"history {b} is empty: LC-Rec needs at least one item to recommend from")
            instructions.append(seqrec_instruction(self.item_code_strings, history))
        return self.format.encode_prompts(instructions)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int = 20,
                 method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search for left-padded prompts.

        Args:
            input_ids, attention_mask: LongTensor [B, L], prompts left-padded.
            num_beams: K beams, all returned.
            method: ``beam`` (shared prompt cache) or ``hf`` (HF ``generate`` + trie logits
                processor); default: the model's ``decoder`` setting.

        Returns:
            (items LongTensor [B, K] item indices best first, -1 where fewer than K items are
            reachable; scores FloatTensor [B, K], summed token log-probabilities incl. the end token).
        """
        self._require_items()
        method = method or self.settings["decoder"]
        if method not in DECODERS:
            raise ValueError(f"unknown decoding method {method!r}; use one of {', '.join(DECODERS)}")
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        device = self.llm.get_input_embeddings().weight.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if attention_mask[:, -1].eq(0).any():
            raise ValueError("prompts must be left-padded (every row's last column a real token)")
        self.trie = self.trie.to(device)
        if method == "hf":
            return self._generate_hf(input_ids, attention_mask, num_beams)
        return self._generate_beam(input_ids, attention_mask, num_beams)

    def _generate_beam(self, input_ids, attention_mask, num_beams):
        """Beam search in which all K beams of a prompt share one KV cache row (tree attention).

        The prompt runs once per user. Step t then feeds the K beams' newest tokens as K query
        positions of the prompt's row, appended to its cache; a 4-D attention mask lets each query
        see the prompt and exactly its own beam's earlier tokens (its ancestry). Beam reordering
        permutes the small [B*K, t*K] ancestry mask instead of copying a [B*K, L] cache.
        """
        implementation = getattr(self.llm.config, "_attn_implementation", "sdpa")
        if implementation not in ("sdpa", "eager"):
            raise ValueError(f"decoder='beam' needs 'sdpa' or 'eager' attention (custom 4-D masks), the model uses "
                             f"{implementation!r}; use LCRec.decoder = 'hf'")
        batch, k = input_ids.shape[0], num_beams
        positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1)
        first = F.log_softmax(out.logits[:, -1].float(), dim=-1).repeat_interleave(k, 0)
        cache, prompt_mask = out.past_key_values, attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
        next_position = attention_mask.sum(1, keepdim=True)  # [B, 1]
        pad = self.tokenizer.pad_token_id
        dtype = self.llm.get_input_embeddings().weight.dtype

        def step(tokens, ancestry, parents):
            if parents is None:
                return first, ancestry
            t = tokens.shape[1]
            own = torch.zeros(batch * k, k, dtype=torch.bool, device=tokens.device)
            own[torch.arange(batch * k), torch.arange(batch * k) % k] = True
            ancestry = torch.cat([ancestry[parents], own], dim=1)  # [B*K, t*K] generated slots each beam sees
            mask = torch.cat([prompt_mask.expand(batch, 1, k, -1), ancestry.view(batch, 1, k, t * k)], dim=3)
            if implementation == "eager":
                mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
            last = torch.where(tokens[:, -1] >= 0, tokens[:, -1], pad).view(batch, k)  # finished beams feed padding
            out = self.llm(input_ids=last, attention_mask=mask, position_ids=(next_position + t - 1).expand(batch, k),
                           past_key_values=cache, use_cache=True)
            return F.log_softmax(out.logits.float(), dim=-1).view(batch * k, -1), ancestry

        empty = torch.zeros(batch * k, 0, dtype=torch.bool, device=input_ids.device)
        items, scores, _ = constrained_beam_search(step, self.trie, batch, k, empty)
        return items, scores

    def _generate_hf(self, input_ids, attention_mask, num_beams):
        from transformers import GenerationConfig, LogitsProcessorList

        prompt_length = input_ids.shape[1]
        config = GenerationConfig(num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                                  max_new_tokens=self.trie.max_depth, length_penalty=0.0, early_stopping=True,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        processor = TrieLogitsProcessor(self.trie, prompt_length, eos_token_id=None)
        out = self.llm.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                logits_processor=LogitsProcessorList([processor]), return_dict_in_generate=True,
                                output_scores=True)
        generated = out.sequences[:, prompt_length:]
        items = self.trie.values(self.trie.walk(generated)).view(-1, num_beams)
        return items, out.sequences_scores.float().view(-1, num_beams)

    def item_index(self, raw_id: str) -> int:
        """Item index of a raw item id; ValueError naming the id when it is unknown."""
        self._require_items()
        try:
            return self._item_lookup[str(raw_id)]
        except KeyError:
            raise ValueError(f"unknown item id {raw_id!r}: not among this model's {len(self.item_ids) - 1} items "
                             f"(e.g. {self.item_ids[1]!r})") from None

    @torch.inference_mode()
    def recommend_indices(self, histories: Sequence[np.ndarray], k: int = 10,
                          method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices [B, k] and scores [B, k] for histories of item indices."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        prompts = self.prompts(histories)
        items, scores = self.generate(**prompts, num_beams=max(k, self.settings["num_beams"]), method=method)
        return items[:, :k], scores[:, :k]

    def recommend(self, histories: Sequence[Sequence[str]], k: int = 10) -> tuple[list[list[str]], torch.Tensor]:
        """Top-k raw item ids for each history of raw item ids (oldest first).

        Returns:
            (B lists of k raw item ids, best first; scores FloatTensor [B, k]).
        """
        if isinstance(histories, str) or not isinstance(histories, Sequence):
            raise ValueError("histories must be a list of histories, each a list of item ids")
        indices = []
        for b, history in enumerate(histories):
            if isinstance(history, str) or len(history) == 0:
                raise ValueError(f"history {b} is {'a string' if isinstance(history, str) else 'empty'}; "
                                 "give each user a non-empty list of item ids")
            indices.append(np.array([self.item_index(raw) for raw in history], dtype=np.int64))
        items, scores = self.recommend_indices(indices, k)
        return [[self.item_ids[i] if i > 0 else None for i in row] for row in items.tolist()], scores

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``lcrec.json``, ``semantic_ids.json`` and ``llm/`` (model or LoRA adapter + tokenizer)."""
        self._require_items()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.llm.save_pretrained(folder / "llm")
        self.tokenizer.save_pretrained(folder / "llm")
        self.semantic_ids.save(folder / "semantic_ids.json", self.item_ids)
        atomic_write_text(folder / SETTINGS, json.dumps({**self.settings, "item_ids": None}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LCRec:
        """Loads a folder written by :meth:`save_pretrained` (weights from safetensors only)."""
        folder = Path(folder)
        if not (folder / SETTINGS).is_file():
            raise FileNotFoundError(f"{folder} is not a saved LCRec (no {SETTINGS}); save one with save_pretrained")
        settings = json.loads((folder / SETTINGS).read_text())
        settings.pop("item_ids", None)
        lora = settings.pop("lora")
        payload = json.loads((folder / "semantic_ids.json").read_text())
        item_ids = [settings.pop("pad_id", "[PAD]")] + list(payload["items"])
        base = settings.pop("pretrained_path")
        sizes, start = settings.pop("codebook_sizes"), settings.pop("code_token_start")
        init = {k: settings.pop(k) for k in ("dtype", "system_prompt", "max_length", "max_history", "num_beams",
                                             "decoder")}
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.gradient_checkpointing = False
        model.settings = dict(pretrained_path=base, **init, codebook_sizes=sizes, code_token_start=start, lora=lora,
                              **settings)
        model._load_llm(folder / "llm", base, lora, init["dtype"])
        model.format = PromptFormat(model.tokenizer, init["system_prompt"], init["max_length"])
        codes = np.full((len(item_ids), len(sizes)), -1, dtype=np.int64)
        codes[1:] = np.array(list(payload["items"].values()), dtype=np.int64)
        ids = SemanticIDs(codes, sizes, payload["dataset"], payload["fingerprint"])
        ids._check(str(folder / "semantic_ids.json"))
        model.semantic_ids = None
        model.set_items(ids, item_ids)
        return model.eval()

    def _load_llm(self, path: Path, base: str, lora: dict | None, dtype: str) -> None:
        from transformers import AutoModelForCausalLM

        self.tokenizer = load_tokenizer(str(path))
        if lora is None:
            self.llm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
            return
        from peft import PeftModel

        llm, _ = load_causal_lm(base, dtype)
        llm.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.llm = PeftModel.from_pretrained(llm, path)
