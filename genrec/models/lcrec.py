"""LC-Rec: a causal LLM that recommends by generating an item's semantic-ID tokens.

LC-Rec (Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation", ICDE 2024, arXiv 2311.09049) adds one token per (level, code) of the items'
semantic IDs to an LLM's vocabulary, ``<C{level}_{code}>``, and fine-tunes it on instructions
written in those tokens (:mod:`genrec.llm.tasks`). To recommend, the model reads a user's history
as code tokens and beam-searches the next item's codes.

    >>> model = LCRec()                                   # the bundled SmolLM2-135M-Instruct
    >>> model.attach(SemanticIDs.read("runs/rqvae/ml100k/semantic_ids.json"))   # tokens, trie, item ids
    >>> model.recommend([["50", "172", "133"]], k=10)     # [[(raw item id, score), ...]]

Differences from the original code, on purpose:

* Decoding is constrained by a prefix trie over the items' full token sequences (codes followed
  by the eos token), so every beam is a catalogue item and beams are distinct items; the original
  only whitelists "any code of this level" and can emit tuples that name no item. The decoders
  live in :mod:`genrec.decoding.causal_lm` (a prompt KV cache shared by the beams, or HF
  ``generate`` with the trie's logits processor); both return the same items.
* New token rows can start at the mean input embedding of the title tokens of the items that use
  the code (``init="mean"``), not at the default random rows.
* LoRA (:meth:`LCRec.enable_lora`, settings from :func:`genrec.llm.lora.lora_settings`) trains the
  new token rows as well (and an untied output head), which LoRA on the projections alone would
  leave frozen.

A saved model (:meth:`save_pretrained`) is one folder: ``lcrec.json`` (settings), ``semantic_ids.json``,
and ``llm/`` (the fine-tuned LLM and its tokenizer, or the LoRA adapter over the named base);
:meth:`from_pretrained` rebuilds it through the constructor and :meth:`attach`. ``lcrec.json``
records the catalogue the model was saved with (item count and a sha256 of the item ids, codes and
codebook sizes), so a ``semantic_ids.json`` that lacks an item or disagrees with the model is
refused, never decoded into other items; and the size and sha256 of every file of ``llm/``, so
damaged weights or tokenizer files are refused by name instead of loaded (``lcrec.json`` carries a
sha256 of its own content too).

Shapes: B batch, K beams, L prompt length, C code levels, V vocabulary, N items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import gin
import numpy as np
import torch

from genrec.decoding import DECODERS, PrefixTrie, decode_items
from genrec.io import atomic_folder, atomic_write_text, file_manifest, fingerprint, manifest_problem
from genrec.llm.finetune import causal_lm_loss, enable_activation_checkpointing
from genrec.llm.lora import apply_lora, lora_settings
from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm, load_tokenizer
from genrec.llm.tasks import PromptFormat, seqrec_instruction
from genrec.models.base import Recommender
from genrec.semantic_ids import SemanticIDs, SemanticIDsError, level_token_starts

__all__ = ["LCRec", "code_token"]

SETTINGS = "lcrec.json"
_CODE_TOKEN = re.compile(r"<C(\d+)_(\d+)>")


def code_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level``: ``<C{level}_{code}>``."""
    return f"<C{level}_{code}>"


@gin.configurable(denylist=["adapter"])
class LCRec(Recommender):
    """A causal LLM with codebook tokens, trie-constrained generation and item recommendation.

    Args:
        pretrained_path: ``bundled:smollm2-135m-instruct`` (default), a local folder or a hub id. A
            folder whose tokenizer already has codebook tokens (a saved fine-tuned LC-Rec LLM)
            brings them along: :meth:`attach` then only checks that the semantic IDs fit them.
        dtype: weight dtype, ``float32`` (default), ``bfloat16`` or ``float16``.
        random_init: the pretrained architecture and tokenizer with random weights (ablation).
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        system_prompt: system message of chat-template prompts (``None``: the template's default).
        max_length: longest training or prompt sequence in tokens.
        max_history: most recent history items in a recommendation prompt.
        num_beams: default beams for :meth:`recommend` (at least the requested ``k``).
        decoder: ``beam`` (our batched beam search with a shared prompt cache) or ``hf``.
        adapter: a saved LoRA adapter folder (with its tokenizer) to load over ``pretrained_path``
            (used by :meth:`from_pretrained`).
    """

    generative = True

    def __init__(self, pretrained_path: str = BUNDLED_LLM, dtype: str = "float32", random_init: bool = False,
                 gradient_checkpointing: bool = False, system_prompt: str | None = None, max_length: int = 512,
                 max_history: int = 20, num_beams: int = 20, decoder: str = "beam", adapter: str | None = None):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown LCRec.decoder {decoder!r}; use one of {', '.join(DECODERS)}")
        if max_history < 1 or num_beams < 1:
            raise ValueError(f"LCRec.max_history and LCRec.num_beams must be >= 1, got {max_history} and {num_beams}")
        self.settings = dict(pretrained_path=pretrained_path, dtype=dtype, system_prompt=system_prompt,
                             max_length=max_length, max_history=max_history, num_beams=num_beams, decoder=decoder,
                             codebook_sizes=None, code_token_start=None, lora=None)
        self.llm, self.tokenizer = load_causal_lm(pretrained_path, dtype, random_init)
        if adapter is not None:
            from peft import PeftModel

            self.tokenizer = load_tokenizer(str(adapter))
            self.llm.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            self.llm = PeftModel.from_pretrained(self.llm, adapter)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            enable_activation_checkpointing(self.llm)
            self.llm.config.use_cache = False
        self.format = PromptFormat(self.tokenizer, system_prompt, max_length)
        self.prompt_template = 0  # the seqrec template of recommendation prompts (all-template evaluation sets it)
        self.semantic_ids: SemanticIDs | None = None
        self.trie: PrefixTrie | None = None
        self.item_code_strings: list[str] = []
        self._find_codebook_tokens()

    # ------------------------------------------------------------------ vocabulary and items

    @property
    def codebook_sizes(self) -> list[int] | None:
        return self.settings["codebook_sizes"]

    def _find_codebook_tokens(self) -> None:
        """Takes over codebook tokens the tokenizer already has (consecutive ids, level by level)."""
        found = {}
        for token, index in self.tokenizer.get_added_vocab().items():
            match = _CODE_TOKEN.fullmatch(token)
            if match:
                found[(int(match[1]), int(match[2]))] = index
        if not found:
            return
        levels = max(level for level, _ in found) + 1
        sizes = [1 + max((code for level_, code in found if level_ == level), default=-1) for level in range(levels)]
        start = found.get((0, 0))
        expected = [(level, code) for level, size in enumerate(sizes) for code in range(size)]
        if start is None or [found.get(key) for key in expected] != list(range(start, start + len(expected))):
            raise ValueError(f"the tokenizer of {self.settings['pretrained_path']} has codebook tokens that are not "
                             "consecutive level by level; it was not saved by LCRec")
        self.settings.update(codebook_sizes=sizes, code_token_start=start)

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
        if len(sizes) != num_codebooks or min(sizes, default=0) < 1:
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
        starts = level_token_starts(sizes, start)
        for level, size in enumerate(sizes):
            table[level, :size] = starts[level] + np.arange(size)
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

    def attach(self, semantic_ids: SemanticIDs, init: str = "default", item_texts: Sequence[str] | None = None) -> None:
        """Gives the model its items, once: codebook tokens (added unless the tokenizer has them), the
        items' code strings, the decoding trie and the raw item ids.

        Args:
            semantic_ids: codes of every item (e.g. ``SemanticIDs.read(path)``, or aligned with a
                dataset by :func:`genrec.semantic_ids.ensure_semantic_ids`).
            init: initialisation of newly added token rows (:meth:`add_codebook_tokens`).
            item_texts: N item texts (row i-1 = item i) for ``init="mean"``.

        Raises:
            ValueError: the model's codebook tokens (added before, or saved with its tokenizer)
                disagree with the semantic IDs' codebook sizes.
        """
        if self.codebook_sizes is None:
            self.add_codebook_tokens(semantic_ids.num_levels, semantic_ids.codebook_sizes, init=init,
                                     item_codes=semantic_ids.codes[1:], item_texts=item_texts)
        elif list(semantic_ids.codebook_sizes) != list(self.codebook_sizes):
            raise ValueError(f"semantic IDs have codebook sizes {semantic_ids.codebook_sizes} but the model's "
                             f"codebook tokens are {self.codebook_sizes}: the vocabulary disagrees with the IDs; "
                             "build the model for these semantic IDs (a new LCRec, or the IDs it was trained with)")
        self.semantic_ids = semantic_ids
        self.set_item_ids(semantic_ids.item_ids)
        start = self.settings["code_token_start"]
        tokens = semantic_ids.token_ids(start)  # [N+1, C]
        self.item_code_strings = [""] + ["".join(self.tokenizer.convert_ids_to_tokens(row.tolist()))
                                         for row in tokens[1:]]
        self.trie = semantic_ids.trie(start, end_token=self.tokenizer.eos_token_id, vocab_size=len(self.tokenizer))

    def _require_items(self) -> None:
        if self.trie is None:
            raise ValueError("this LCRec has no items yet; call attach(semantic_ids) first")

    # ------------------------------------------------------------------ training

    def enable_lora(self, settings: dict | None = None) -> None:
        """Wraps the LLM with LoRA adapters; the codebook token rows and an untied output head stay trainable.

        Args:
            settings: :func:`genrec.llm.lora.lora_settings` (default: its gin-configured values;
                LC-Rec's r 8, alpha 32, dropout 0.05 on every projection).
        """
        if self.codebook_sizes is None:
            raise ValueError("add codebook tokens (attach or add_codebook_tokens) before enable_lora: the new rows "
                             "must be trainable")
        settings = settings or lora_settings()
        start, count = self.settings["code_token_start"], sum(self.codebook_sizes)
        self.llm = apply_lora(self.llm, settings, trainable_token_indices=range(start, start + count),
                              task_type="CAUSAL_LM", gradient_checkpointing=self.gradient_checkpointing)
        self.settings["lora"] = {**settings, "target_modules": _listed(settings["target_modules"])}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                label_positions: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Causal-LM loss on the labelled (response) tokens.

        Args:
            input_ids: LongTensor [B, L]: right-padded rows (with ``attention_mask``), or packed rows
                (several examples end to end, with ``position_ids`` and no mask; see
                :class:`~genrec.llm.tasks.TaskData`).
            attention_mask: LongTensor [B, L], 1 on real tokens; ``None`` for packed rows.
            labels: LongTensor [B, L], -100 where no loss is taken.
            position_ids: LongTensor [B, L] restarting at 0 for each packed example.
            label_positions: LongTensor [N], the labelled positions as the batch lists them
                (:func:`genrec.llm.finetune.labelled_positions`; spares a device sync).

        Returns:
            With labels: (None, mean cross-entropy over the labelled tokens), from
            :func:`genrec.llm.finetune.causal_lm_loss`, which applies the output head to the labelled
            positions only (no [B, L, V] logits). Without labels: (logits [B, L, V], None).
        """
        if labels is None:
            out = self.llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False)
            return out.logits, None
        return None, causal_lm_loss(self.llm, input_ids, labels, attention_mask=attention_mask,
                                    position_ids=position_ids, label_positions=label_positions)

    # ------------------------------------------------------------------ generation

    def prompts(self, histories: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Left-padded seqrec prompts for histories of item indices, in template ``self.prompt_template``
        (0 unless :mod:`genrec.llm.template_eval` is evaluating another)."""
        self._require_items()
        max_history = self.settings["max_history"]
        instructions = []
        for b, history in enumerate(histories):
            history = np.asarray(history, dtype=np.int64)
            history = history[history > 0][-max_history:]
            if not len(history):
                raise ValueError(f"history {b} is empty: LC-Rec needs at least one item to recommend from")
            instructions.append(seqrec_instruction(self.item_code_strings, history, self.prompt_template))
        return self.format.encode_prompts(instructions)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 num_beams: int | None = None, max_new_tokens: int | None = None,
                 method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search for left-padded prompts: only catalogue items come out.

        Args:
            input_ids: LongTensor [B, L], prompts left-padded.
            attention_mask: LongTensor [B, L] (default: every token real).
            num_beams: K beams, all returned (default: the model's ``num_beams``).
            max_new_tokens: generation budget; an item takes C code tokens + the end token, so a
                smaller budget is an error (the trie fixes the length; a larger one changes nothing).
            method: ``beam`` (shared prompt cache) or ``hf`` (HF ``generate`` + trie logits
                processor); default: the model's ``decoder`` setting.

        Returns:
            (items LongTensor [B, K], item indices best first, -1 where fewer than K items are
            reachable; scores FloatTensor [B, K], summed token log-probabilities incl. the end token).
        """
        self._require_items()
        if max_new_tokens is not None and max_new_tokens < self.trie.max_depth:
            raise ValueError(f"max_new_tokens={max_new_tokens} cannot spell an item: each takes {self.trie.max_depth} "
                             f"tokens ({self.trie.max_depth - 1} codes + the end token)")
        device = self.llm.get_input_embeddings().weight.device
        input_ids = input_ids.to(device)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
        self.trie = self.trie.to(device)
        return decode_items(self.llm, input_ids, attention_mask, self.trie, num_beams or self.settings["num_beams"],
                            self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                            method or self.settings["decoder"])

    @torch.inference_mode()
    def recommend_indices(self, histories: Sequence[np.ndarray], k: int = 10, users: np.ndarray | None = None,
                          method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices [B, k] and scores [B, k] for histories of item indices (``users`` unused)."""
        self._require_items()
        if not 1 <= k <= self.semantic_ids.num_items:
            raise ValueError(f"k must be in 1..{self.semantic_ids.num_items} (the number of items), got {k}")
        prompts = self.prompts(histories)
        items, scores = self.generate(**prompts, num_beams=max(k, self.settings["num_beams"]), method=method)
        return items[:, :k], scores[:, :k].float()

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``lcrec.json``, ``semantic_ids.json`` and ``llm/`` (model or LoRA adapter + tokenizer)
        into a temporary folder renamed over ``folder`` at the end (a kill never leaves half a model)."""
        self._require_items()
        with atomic_folder(folder) as tmp:
            self.llm.save_pretrained(tmp / "llm")
            self.tokenizer.save_pretrained(tmp / "llm")
            self.semantic_ids.save(tmp / "semantic_ids.json")
            names = sorted(path.name for path in (tmp / "llm").iterdir() if path.is_file())
            record = {**self.settings, "catalogue": catalogue_record(self.semantic_ids),
                      "llm_files": file_manifest(tmp / "llm", names)}
            record["sha256"] = fingerprint(record)  # of every other key: an altered lcrec.json is refused
            atomic_write_text(tmp / SETTINGS, json.dumps(record, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LCRec:
        """Loads a folder written by :meth:`save_pretrained` (weights from safetensors only)."""
        folder = Path(folder)
        if not (folder / SETTINGS).is_file():
            reason = "does not exist" if not folder.exists() else f"has no {SETTINGS}"
            raise FileNotFoundError(f"{folder} is not a saved LCRec (it {reason}); save one with save_pretrained, "
                                    "e.g. the model/ folder of an LC-Rec run")
        try:
            settings = json.loads((folder / SETTINGS).read_text())
        except (ValueError, UnicodeDecodeError) as err:
            settings = f"not JSON ({err})"
        if isinstance(settings, dict) and settings.pop("sha256", None) not in (None, fingerprint(settings)):
            settings = "its sha256 does not match its content"
        if not isinstance(settings, dict) or "pretrained_path" not in settings:
            raise ValueError(f"{folder / SETTINGS} is corrupt ({str(settings)[:80]}); save the model again "
                             "(save_pretrained) or re-run the LC-Rec trainer that wrote it")
        problem = manifest_problem(folder / "llm", settings["llm_files"]) if "llm_files" in settings else None
        if problem is not None:
            raise ValueError(f"{problem}: the saved LLM differs from what was saved with {folder / SETTINGS}; save "
                             "the model again, or re-run the LC-Rec trainer that wrote it")
        semantic_ids = SemanticIDs.read(folder / "semantic_ids.json")
        recorded, found = settings.get("catalogue"), catalogue_record(semantic_ids)
        if recorded is not None and recorded != found:
            raise SemanticIDsError(f"{folder / 'semantic_ids.json'} has {found['items']} items (sha256 "
                                   f"{found['sha256'][:12]}), but the model was saved with {recorded}: an item is "
                                   "missing or its codes differ; restore the semantic_ids.json saved with this model")
        lora, base = settings.get("lora"), settings["pretrained_path"]
        init = {key: settings[key] for key in ("dtype", "system_prompt", "max_length", "max_history", "num_beams",
                                               "decoder")}
        llm = str(folder / "llm")
        model = cls(pretrained_path=base if lora else llm, adapter=llm if lora else None, random_init=False,
                    gradient_checkpointing=False, **init)
        model.settings.update(pretrained_path=base, lora=lora)
        model.attach(semantic_ids)
        return model.eval()


def catalogue_record(semantic_ids: SemanticIDs) -> dict:
    """``{"items": N, "sha256": ...}`` over the item ids, codes and codebook sizes (what decoding maps to)."""
    return {"items": semantic_ids.num_items,
            "sha256": fingerprint([semantic_ids.item_ids, semantic_ids.codes.tolist(), semantic_ids.codebook_sizes])}


def _listed(targets):
    return targets if targets is None or isinstance(targets, str) else list(targets)
