"""RecLM: a chat LLM that recommends in titles (RecLM-gen), optionally with item spans (RecLM-cgen).

RecLM-gen (Lu et al., ACL 2024, arXiv 2403.05063) fine-tunes an LLM to answer a recommendation
instruction with a list of titles; RecLM-cgen (Liao et al., arXiv 2505.03336) has it write each
item as ``<SOI>title<EOI>`` and constrains the spans to catalogue titles at decoding, so that no
recommended item is out of the catalogue. Both live in RecAI; this model is the two together:

    >>> model = RecLM()                                   # the bundled SmolLM2-135M-Instruct + <SOI>/<EOI>
    >>> model.attach(catalogue_titles(raw_titles, model.tokenizer))
    >>> text, items = model.recommend_text(history=[50, 172], request="Two comedies, please.")

* ``span_tokens`` adds ``<SOI>``/``<EOI>`` (:func:`~genrec.decoding.title_trie.add_span_tokens`);
  ``constrained`` decodes with :class:`~genrec.decoding.span_constraints.SpanLogitsProcessor`
  (free text untouched, spans trie-constrained, no repeats); ``scope_mask`` trains with
  :func:`~genrec.decoding.span_loss.scope_mask_loss`, else with the plain response loss
  (:func:`~genrec.llm.finetune.causal_lm_loss`).
* :meth:`recommend_indices` (the evaluation contract) asks for ``list_length`` items. Constrained,
  the answer is forced into ``list_length`` spans, one per line (list mode), even for a model never
  trained to open a span; unconstrained, the model writes freely for at most ``tokens_per_item``
  tokens per item and the answer is parsed: spans when it wrote any, else one entry per line.
  An entry that is not exactly a catalogue title is item -1 (a non-existent item); the caller may
  map entries fuzzily instead (:meth:`answer_entries` gives the texts).
* :meth:`recommend_text` is the chat API: free prose in which every span names a catalogue item.

Shapes: B batch, L prompt length, V vocabulary, N items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import gin
import numpy as np
import torch

from genrec.decoding.span_constraints import SpanLogitsProcessor
from genrec.decoding.span_loss import scope_mask_loss
from genrec.decoding.title_trie import EOI, SOI, TitleTrie, add_span_tokens
from genrec.io import atomic_folder, atomic_write_text
from genrec.llm.finetune import causal_lm_loss, enable_activation_checkpointing
from genrec.llm.lora import apply_lora
from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm, load_tokenizer
from genrec.llm.reclm_tasks import reclm_instruction
from genrec.llm.tasks import PromptFormat
from genrec.models.base import Recommender

__all__ = ["RecLM"]

SETTINGS = "reclm.json"
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*\u2022])\s*")


@gin.configurable(denylist=["adapter"])
class RecLM(Recommender):
    """A causal LLM that answers with item titles; see the module docstring.

    Args:
        pretrained_path: ``bundled:smollm2-135m-instruct`` (default), a folder or a hub id.
        dtype: weight dtype.
        span_tokens: add ``<SOI>``/``<EOI>`` and write answers as spans (RecLM-cgen's format).
        constrained: decode with the span constraint (needs ``span_tokens``).
        scope_mask: train with the scope-mask loss (needs ``span_tokens``).
        focal_gamma: focal exponent of the scope-mask loss.
        system_prompt: chat system message (``None``: the template's default).
        max_length: longest prompt / training sequence in tokens.
        max_history: most recent history titles in a prompt.
        list_length: items asked for by :meth:`recommend_indices`.
        tokens_per_item: generation budget per item when unconstrained.
        noun: what an item is called in prompts (``movie`` for MovieLens).
        adapter: a saved LoRA adapter folder (with tokenizer) over ``pretrained_path``.
        gradient_checkpointing: recompute activations in the backward pass (training memory; not saved
            with the model).
    """

    generative = True

    def __init__(self, pretrained_path: str = BUNDLED_LLM, dtype: str = "float32", span_tokens: bool = True,
                 constrained: bool = True, scope_mask: bool = True, focal_gamma: float = 0.0,
                 system_prompt: str | None = None, max_length: int = 768, max_history: int = 20,
                 list_length: int = 10, tokens_per_item: int = 16, noun: str = "item", adapter: str | None = None,
                 gradient_checkpointing: bool = False):
        super().__init__()
        if (constrained or scope_mask) and not span_tokens:
            raise ValueError("RecLM.constrained and RecLM.scope_mask need span_tokens = True (the constraint lives "
                             "inside <SOI>...<EOI> spans)")
        if max_history < 1 or list_length < 1 or tokens_per_item < 1:
            raise ValueError("RecLM.max_history, list_length and tokens_per_item must be >= 1")
        self.settings = dict(pretrained_path=pretrained_path, dtype=dtype, span_tokens=span_tokens,
                             constrained=constrained, scope_mask=scope_mask, focal_gamma=focal_gamma,
                             system_prompt=system_prompt, max_length=max_length, max_history=max_history,
                             list_length=list_length, tokens_per_item=tokens_per_item, noun=noun, lora=None)
        self.llm, self.tokenizer = load_causal_lm(pretrained_path, dtype)
        if adapter is not None:
            from peft import PeftModel

            self.tokenizer = load_tokenizer(str(adapter))
            self.llm.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            self.llm = PeftModel.from_pretrained(self.llm, adapter)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            enable_activation_checkpointing(self.llm)
        if span_tokens:
            add_span_tokens(self.tokenizer, self.llm)
        self.format = PromptFormat(self.tokenizer, system_prompt, max_length)
        newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.separator_id = newline[0] if len(newline) == 1 else None
        self.titles: list[str] = []
        self.title_trie: TitleTrie | None = None
        self._exact: dict[str, int] = {}

    def attach(self, titles: Sequence[str], item_ids: Sequence[str] | None = None) -> None:
        """Gives the model its catalogue: one distinct title per item index (index 0 unused), e.g.
        :func:`~genrec.decoding.title_trie.catalogue_titles`; builds the span trie."""
        self.titles = list(titles)
        self._exact = {}
        for item, title in enumerate(self.titles):
            if item:
                self._exact.setdefault(title.strip().casefold(), item)
        if item_ids is not None:
            self.set_item_ids(item_ids)
        if self.settings["span_tokens"]:
            device = self.llm.get_input_embeddings().weight.device
            self.title_trie = TitleTrie(self.titles, self.tokenizer).to(device)

    def _require_items(self) -> None:
        if not self.titles:
            raise ValueError("this RecLM has no catalogue yet; call attach(titles) first")

    def enable_lora(self, settings: dict) -> None:
        """Wraps the LLM with LoRA adapters; the span token rows train in full."""
        rows = None
        if self.settings["span_tokens"]:
            rows = [self.tokenizer.convert_tokens_to_ids(SOI), self.tokenizer.convert_tokens_to_ids(EOI)]
        self.llm = apply_lora(self.llm, settings, trainable_token_indices=rows, task_type="CAUSAL_LM",
                              gradient_checkpointing=self.gradient_checkpointing)
        self.settings["lora"] = dict(settings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                label_positions: torch.Tensor | None = None):
        """``(None, loss)`` with labels (scope-mask loss or the plain response loss), else ``(logits, None)``."""
        if labels is None:
            return self.llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).logits, None
        if self.settings["scope_mask"]:
            self._require_items()
            return None, scope_mask_loss(self.llm, input_ids, labels, self.title_trie, attention_mask,
                                         position_ids, label_positions, self.settings["focal_gamma"])
        return None, causal_lm_loss(self.llm, input_ids, labels, attention_mask=attention_mask,
                                    position_ids=position_ids, label_positions=label_positions)

    # ------------------------------------------------------------------ generation

    def instruction(self, history: Sequence[int], task: str = "sequential", n: int | None = None, **control) -> str:
        """The RecLM-gen instruction for a history of item indices (:func:`reclm_instruction`)."""
        self._require_items()
        history = [int(i) for i in history if int(i) > 0][-self.settings["max_history"]:]
        if not history:
            raise ValueError("the history is empty: RecLM needs at least one item to recommend from")
        return reclm_instruction([self.titles[i] for i in history], task, n or self.settings["list_length"],
                                 self.settings["noun"], **control)

    @torch.inference_mode()
    def generate_answers(self, instructions: Sequence[str], constrained: bool | None = None,
                         item_count: int | None = None, max_new_tokens: int | None = None,
                         num_beams: int = 1, num_return_sequences: int = 1,
                         excluded: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
        """Generated token ids of each instruction's answer (greedy, or beam search with ``num_beams``).

        Args:
            instructions: B instruction texts (rendered with the chat template).
            constrained: use the span constraint (default: the model's setting).
            item_count: list mode of the constraint (exactly this many spans, one per line).
            max_new_tokens: budget (default: enough for ``item_count`` or ``list_length`` items).
            num_beams, num_return_sequences: beam search; answers come back B x num_return_sequences.
            excluded: per instruction, items the constraint never lets a span name (e.g. the history).
        """
        constrained = self.settings["constrained"] if constrained is None else constrained
        if constrained:
            self._require_items()
            if not self.settings["span_tokens"]:
                raise ValueError("constrained decoding needs a RecLM with span_tokens = True")
            if item_count is not None and self.separator_id is None:
                raise ValueError("list mode needs a tokenizer that writes a newline as one token")
        n = item_count or self.settings["list_length"]
        if max_new_tokens is None:
            per_item = self.title_trie.trie.max_depth + 2 if constrained else self.settings["tokens_per_item"]
            max_new_tokens = n * per_item + 1
        from transformers import GenerationConfig, LogitsProcessorList

        prompts = self.format.encode_prompts(instructions)
        device = self.llm.get_input_embeddings().weight.device
        input_ids, mask = prompts["input_ids"].to(device), prompts["attention_mask"].to(device)
        processors = LogitsProcessorList()
        if constrained:
            processors.append(SpanLogitsProcessor(self.title_trie, input_ids.shape[1], self.tokenizer.eos_token_id,
                                                  item_count, self.separator_id, excluded))
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                  num_return_sequences=num_return_sequences, pad_token_id=self.tokenizer.pad_token_id,
                                  eos_token_id=self.tokenizer.eos_token_id)
        out = self.llm.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                logits_processor=processors)
        answers = []
        for row in out[:, input_ids.shape[1]:].tolist():
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            answers.append(row)
        return answers

    def answer_entries(self, token_ids: Sequence[int]) -> list[str]:
        """The entries of an answer as texts: its spans when it has any, else its non-empty lines
        (numbering such as ``1.`` or ``-`` removed)."""
        if self.title_trie is not None and self.title_trie.soi_id in token_ids:
            return [text for text, _ in self.title_trie.parse(token_ids, self.tokenizer)]
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        entries = [_NUMBERING.sub("", line).strip().strip('"').strip() for line in text.splitlines()]
        return [entry for entry in entries if entry]

    def entry_item(self, entry: str) -> int:
        """The item whose title is exactly ``entry`` (ignoring case and outer spaces), else -1."""
        return self._exact.get(entry.strip().casefold(), -1)

    def recommend_lists(self, histories: Sequence[np.ndarray], n: int | None = None, constrained: bool | None = None,
                        exclude_history: bool = False) -> tuple[list[list[int]], list[list[int]]]:
        """Per history: the answer's items (-1 for an entry that is no catalogue title) and its token ids.
        ``exclude_history`` (constrained decoding only): no span names an item of the user's whole history."""
        n = n or self.settings["list_length"]
        constrained = self.settings["constrained"] if constrained is None else constrained
        instructions = [self.instruction(h, "sequential", n) for h in histories]
        answers = self.generate_answers(instructions, constrained, item_count=n if constrained else None,
                                        excluded=histories if exclude_history else None)  # padding 0 is ignored there
        return [[self.entry_item(e) for e in self.answer_entries(a)] for a in answers], answers

    @torch.inference_mode()
    def recommend_indices(self, histories: Sequence[np.ndarray], k: int = 10, users: np.ndarray | None = None,
                          constrained: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items [B, k] as the answers list them (``list_length`` asked for; -1 fills the rest,
        and replaces non-existent and repeated entries); scores [B, k] = minus the position."""
        lists, _ = self.recommend_lists(histories, constrained=constrained)
        items = torch.full((len(lists), k), -1, dtype=torch.long)
        for b, row in enumerate(lists):
            kept = [item if item > 0 and item not in row[:i] else -1 for i, item in enumerate(row)][:k]
            items[b, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        scores = -torch.arange(k, dtype=torch.float32).expand(len(lists), k).clone()
        return items, scores.masked_fill(items < 0, float("-inf"))

    def recommend_text(self, history: Sequence[int], request: str, constrained: bool = True,
                       max_new_tokens: int = 200, num_beams: int = 1) -> tuple[str, list[int]]:
        """Chat-style recommendation: prose answering ``request`` for a user with ``history``.

        Args:
            history: the user's item indices, oldest first (may be empty).
            request: what the user asks for, in words.
            constrained: every item span is a catalogue item, none repeated (the span constraint).
            max_new_tokens: answer budget.
            num_beams: beam search width (1: greedy).

        Returns:
            ``(text, items)``: the answer with span tokens kept, and the items its spans name
            (-1 for an unconstrained span that names no catalogue item), in order.
        """
        self._require_items()
        titles = "; ".join(self.titles[int(i)] for i in list(history)[-self.settings["max_history"]:] if int(i) > 0)
        noun = self.settings["noun"]
        instruction = (f"A user watched these {noun}s, oldest first: {titles}. " if titles else "") + \
            f"The user asks: {request.strip()} Answer, writing every {noun} you recommend as {SOI}title{EOI}."
        answer = self.generate_answers([instruction], constrained, None, max_new_tokens, num_beams)[0]
        text = self.tokenizer.decode(answer, skip_special_tokens=False)
        items = [item for _, item in self.title_trie.parse(answer, self.tokenizer)] if self.title_trie else []
        return text, items

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``reclm.json`` (settings and titles) and ``llm/`` (model or LoRA adapter + tokenizer)
        into a temporary folder renamed over ``folder``."""
        self._require_items()
        with atomic_folder(folder) as tmp:
            self.llm.save_pretrained(tmp / "llm")
            self.tokenizer.save_pretrained(tmp / "llm")
            record = {**self.settings, "titles": self.titles, "item_ids": self.item_ids}
            atomic_write_text(tmp / SETTINGS, json.dumps(record, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> RecLM:
        """Loads a folder written by :meth:`save_pretrained` (weights from safetensors)."""
        folder = Path(folder)
        try:
            record = json.loads((folder / SETTINGS).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{folder} is not a saved RecLM ({folder / SETTINGS}: {err}); save one with "
                             "save_pretrained, e.g. the model/ folder of a RecLM run") from None
        lora, base, llm = record.pop("lora"), record.pop("pretrained_path"), str(folder / "llm")
        titles, item_ids = record.pop("titles"), record.pop("item_ids")
        model = cls(pretrained_path=base if lora else llm, adapter=llm if lora else None, **record)
        model.settings.update(pretrained_path=base, lora=lora)
        model.attach(titles, item_ids)
        return model.eval()
