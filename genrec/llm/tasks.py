"""Instruction-tuning tasks that teach a causal LLM to speak in item codes (LC-Rec).

LC-Rec (Zheng et al., ICDE 2024, arXiv 2311.09049) fine-tunes an LLM on prompts in which every
item is written as its semantic ID, one added token per level (``<C0_17><C1_3><C2_40>``). Its six
task families are here (:data:`TASKS`), each with a pool of paraphrased instructions
(:mod:`genrec.llm.templates`); one is drawn per example from a seeded generator, so a run is
reproducible. Histories are the user's last (at most ``max_history``) items and every example
comes from the **training** sequences only (``split.train``; valid and test targets are never seen):

* ``seqrec``: a history's codes -> the codes of the next item; a sliding window over every prefix,
  as LC-Rec does.
* ``item2index``: an item's text -> its codes (aligns language with the new tokens).
* ``index2item``: an item's codes -> its title.
* ``fusionseqrec``: the same windows as ``seqrec``, in both directions between codes and language:
  a history's codes -> the next item's title or description (:func:`item_description`), or the
  history's titles -> the next item's codes (subsampled by ``max_fusion_examples``, as LC-Rec does).
* ``itemsearch``: a search query for the last training item of each user (with, depending on the
  template, the history before it and the user's preference) -> its codes.
* ``preferenceobtain``: each user's training history -> the user's preference in text.

The queries and preferences are LC-Rec's GPT-written intentions replaced by texts derived offline
from the catalogue (genres or categories, era, brand, title words; :mod:`genrec.llm.intentions`).

:class:`PromptFormat` renders an instruction with the tokenizer's chat template when it has one
(a user turn, then the generation prompt), else with LC-Rec's Alpaca frame (``### Instruction:`` /
``### Response:``). A training sequence is prompt + response + end-of-sequence token; labels are
-100 on the prompt and on padding, so the loss covers exactly the response and its end token. The
end token is labelled by position, not by id, so it is learned even when the tokenizer's pad token
is its eos token (SmolLM2, Qwen base models).

:class:`TaskData` renders and tokenises every example once, when it is built (about 0.3 ms of CPU
per example), and serves padding-free packed batches by default (the fast path of
:mod:`genrec.llm.finetune`).

Shapes: B batch, L sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
import torch
from torch.utils.data import Dataset

from genrec.data import ItemCatalog
from genrec.llm.finetune import IGNORE, batch_examples, pad_examples
from genrec.llm.intentions import item_facets, item_query, preference_text
from genrec.llm.templates import FUSION_RESPONSES, TEMPLATES

__all__ = ["DEFAULT_TASKS", "TASKS", "TEMPLATES", "PromptFormat", "TaskData", "item_description", "item_title"]

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n")

TASKS = tuple(TEMPLATES)
"""Every task name, in the order of the ``task`` column of :attr:`TaskData.rows`."""

DEFAULT_TASKS = ("seqrec", "item2index", "index2item")
"""The mix when none is named (the configs name LC-Rec's six; see ``config/lcrec/ml100k/lcrec.gin``)."""


def item_title(catalog: ItemCatalog, item: int) -> str:
    """``"Title (year)"`` of item index ``item`` (the catalogue text when it has no title field)."""
    title = catalog.fields.get("title", [""] * len(catalog.item_ids))[item]
    year = catalog.fields.get("year", [""] * len(catalog.item_ids))[item]
    if not title:
        return catalog.text(item)
    return f"{title} ({year})" if year else title


def item_description(catalog: ItemCatalog, item: int) -> str:
    """The ``description`` field of item index ``item``; without one, its other non-title fields
    (``"Year: 1996. Genres: Comedy."``); ``""`` when the item has only a title."""
    described = catalog.fields.get("description", [""] * len(catalog.item_ids))[item].strip()
    if described:
        return described
    parts = [f"{field.replace('_', ' ').capitalize()}: {values[item].strip()}"
             for field, values in catalog.fields.items()
             if field not in ("title", "description") and values[item].strip()]
    return " ".join(part if part[-1] in ".!?" else part + "." for part in parts)


class PromptFormat:
    """Turns (instruction, response) into token ids and labels for one tokenizer.

    Args:
        tokenizer: a Hugging Face tokenizer with an eos token.
        system_prompt: system message for chat templates (``None``: the template's default).
        max_length: longest training sequence in tokens; longer ones lose tokens from the left of
            the prompt (the response is always kept whole).
    """

    def __init__(self, tokenizer, system_prompt: str | None = None, max_length: int = 512):
        if tokenizer.eos_token_id is None:
            raise ValueError("PromptFormat needs a tokenizer with an eos token")
        self.tokenizer, self.system_prompt, self.max_length = tokenizer, system_prompt, max_length
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    def prompt_text(self, instruction: str) -> str:
        """The full prompt text ending where the model starts answering."""
        if not instruction.strip():
            raise ValueError("empty instruction: every prompt needs text")
        if self.chat:
            messages = [{"role": "user", "content": instruction}]
            if self.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{ALPACA_PREAMBLE}### Instruction:\n{instruction}\n\n### Response:\n"

    def prompt_ids(self, instructions: Sequence[str]) -> list[list[int]]:
        """Token ids of each instruction's prompt (special tokens as the template writes them)."""
        texts = [self.prompt_text(instruction) for instruction in instructions]
        # A chat template writes its own special tokens; the Alpaca frame gets the tokenizer's BOS.
        return self.tokenizer(texts, add_special_tokens=not self.chat)["input_ids"]

    def tokenize(self, instructions: Sequence[str], responses: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per example, unpadded int64 ``(input_ids, labels)``: prompt + response + eos, labels -100 on the prompt."""
        prompts = self.prompt_ids(instructions)
        answers = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        examples = []
        for prompt, answer in zip(prompts, answers, strict=True):
            if not answer:
                raise ValueError("empty response: every training example needs a target")
            answer = answer + [eos]
            if len(answer) >= self.max_length:
                raise ValueError(f"a response of {len(answer)} tokens does not fit max_length={self.max_length}; "
                                 "raise the max_length")
            prompt = prompt[max(0, len(prompt) + len(answer) - self.max_length):]
            ids = np.array(prompt + answer, dtype=np.int64)
            labels = ids.copy()
            labels[: len(prompt)] = IGNORE
            examples.append((ids, labels))
        return examples

    def encode(self, instructions: Sequence[str], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` [B, L] for training.

        Labels are the response tokens and the eos token after them; -100 elsewhere.
        """
        return pad_examples(self.tokenize(instructions, responses), self.tokenizer.pad_token_id)

    def encode_prompts(self, instructions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` [B, L] for generation."""
        prompts = [p[-self.max_length:] for p in self.prompt_ids(instructions)]
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, prompt in enumerate(prompts):
            input_ids[b, width - len(prompt):] = torch.tensor(prompt)
            mask[b, width - len(prompt):] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def seqrec_instruction(item_codes: Sequence[str], history: np.ndarray, template: int = 0) -> str:
    """The ``seqrec`` instruction for a history of item indices (codes joined by ", ")."""
    return TEMPLATES["seqrec"][template].format(history=", ".join(item_codes[i] for i in history))


@gin.configurable(denylist=["train_sequences", "item_codes", "catalog", "prompt_format"])
class TaskData(Dataset):
    """The LC-Rec training examples; each item of the dataset is one (instruction, response) pair.

    Every example is rendered and tokenised once, when the dataset is built (``pretokenize``), into
    flat int32 arrays; a batch (``__getitems__``, called by the loader with a list of indices) only
    slices them. Batches are padding-free by default (``packing``): the examples are laid end to end
    in rows of at most ``pack_tokens`` tokens with ``position_ids`` that restart at each example and
    no attention mask (:func:`genrec.llm.finetune.pack_examples`; transformers then keeps attention
    within each example), else right-padded rows with an ``attention_mask``. Pass
    :meth:`TaskData.collate` as the loader's ``collate_fn``.

    Args:
        train_sequences: per user, the time-ordered training items (``split.train``).
        item_codes: per item index, its code string (``item_codes[0]`` unused).
        catalog: item texts, titles and descriptions, and the facets of queries and preferences.
        prompt_format: renders and tokenises examples.
        tasks: which of :data:`TASKS` to train on (default :data:`DEFAULT_TASKS`; LC-Rec's own
            mix is all six); an unknown name is an error that lists the valid ones.
        max_history: most recent items in any history (LC-Rec: 20).
        max_seqrec_examples: keep this many ``seqrec`` windows, drawn at random (``None``: all).
        item_repeats: examples per item for ``item2index`` and ``index2item`` (each a fresh template).
        max_fusion_examples: keep this many ``fusionseqrec`` windows, drawn at random (``None``:
            all; LC-Rec keeps 20k to 100k per dataset).
        seed: seeds template choice and window sampling.
        pretokenize: tokenise every example once at construction (else each batch when fetched).
        packing: padding-free packed batches (else right-padded ones).
        pack_tokens: most tokens in a packed row (``None``: the whole batch in one row; rows
            widen to a longer example). Attention runs over whole rows, so short rows are
            cheaper: 256 costs a few per cent of padding and little attention on LC-Rec's examples.
    """

    def __init__(self, train_sequences: Sequence[np.ndarray], item_codes: Sequence[str], catalog: ItemCatalog,
                 prompt_format: PromptFormat, tasks: Sequence[str] = DEFAULT_TASKS, max_history: int = 20,
                 max_seqrec_examples: int | None = None, item_repeats: int = 1,
                 max_fusion_examples: int | None = None, seed: int = 0, pretokenize: bool = True,
                 packing: bool = True, pack_tokens: int | None = 256):
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = [task for task in tasks if task not in TEMPLATES]
        if unknown or not tasks:
            what = f"unknown: {', '.join(map(repr, unknown))}" if unknown else "the list is empty"
            raise ValueError(f"unknown or no LC-Rec tasks {tasks!r} ({what}); TaskData.tasks takes any of "
                             f"{', '.join(TASKS)}")
        if max_history < 1:
            raise ValueError(f"TaskData.max_history must be >= 1, got {max_history}")
        if pack_tokens is not None and pack_tokens < 1:
            raise ValueError(f"TaskData.pack_tokens must be >= 1 or None, got {pack_tokens}")
        self.packing, self.pack_tokens = packing, pack_tokens
        self.item_codes, self.catalog, self.format = list(item_codes), catalog, prompt_format
        self.max_history = max_history
        rng = np.random.default_rng(seed)
        parts = []  # rows of (task, a, b): item tasks (item, 0); every other task (user, end of its history)
        users = np.concatenate([np.full(max(len(s) - 1, 0), u) for u, s in enumerate(train_sequences)])
        ends = np.concatenate([np.arange(1, len(s)) for s in train_sequences if len(s) > 1] or [np.zeros(0, int)])
        if "seqrec" in tasks:
            keep = _sample(rng, len(ends), max_seqrec_examples)
            parts.append(_task_rows("seqrec", users[keep], ends[keep]))
        items = np.tile(np.arange(1, len(self.item_codes)), item_repeats)
        for task in ("item2index", "index2item"):
            if task in tasks:
                parts.append(_task_rows(task, items, np.zeros_like(items)))
        # The tasks LC-Rec added later draw from their own generator: the rows and templates of the
        # three first tasks stay those of a mix without them.
        extra = np.random.default_rng([seed, 1])
        if "fusionseqrec" in tasks:
            keep = _sample(extra, len(ends), max_fusion_examples)
            parts.append(_task_rows("fusionseqrec", users[keep], ends[keep]))
        lengths = np.array([len(s) for s in train_sequences], dtype=np.int64)
        if "itemsearch" in tasks:  # the last training item of each user with a history before it
            searchers = np.flatnonzero(lengths >= 2)
            parts.append(_task_rows("itemsearch", searchers, lengths[searchers] - 1))
        if "preferenceobtain" in tasks:  # each user's whole (truncated) training history
            profiled = np.flatnonzero(lengths >= 1)
            parts.append(_task_rows("preferenceobtain", profiled, lengths[profiled]))
        rows = np.concatenate(parts)
        if not len(rows):
            raise ValueError(f"LC-Rec tasks {tasks!r} yield no training example from these sequences")
        sizes = np.array([len(TEMPLATES[t]) for t in TASKS])
        first = rows[:, 0] < TASKS.index("fusionseqrec")
        templates = np.zeros(len(rows), np.int64)
        templates[first] = rng.integers(0, 1 << 30, int(first.sum())) % sizes[rows[first, 0]]
        templates[~first] = extra.integers(0, 1 << 30, int((~first).sum())) % sizes[rows[~first, 0]]
        self.rows = np.column_stack([rows, templates]).astype(np.int64)
        self.sequences = list(train_sequences)
        self.facets = item_facets(catalog) if {"itemsearch", "preferenceobtain"} & set(tasks) else None
        self.counts = {task: int((self.rows[:, 0] == i).sum()) for i, task in enumerate(TASKS) if task in tasks}
        self._tokens: np.ndarray | None = None  # int32, all examples' ids end to end
        if pretokenize:
            self._pretokenize()

    def _pretokenize(self, chunk: int = 4096) -> None:
        """Renders and tokenises every example once: ids end to end, offsets [M + 1], prompt lengths [M]."""
        pieces, lengths, prompts = [], np.zeros(len(self), np.int64), np.zeros(len(self), np.int32)
        for start in range(0, len(self), chunk):
            rows = range(start, min(start + chunk, len(self)))
            for i, (ids, labels) in zip(rows, self._tokenize(rows)):
                pieces.append(ids.astype(np.int32))
                lengths[i], prompts[i] = len(ids), int((labels == IGNORE).sum())
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._prompt_lengths = prompts
        self._tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)

    def _tokenize(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        instructions, responses = zip(*(self.example(int(i)) for i in indices))
        return self.format.tokenize(instructions, responses)

    def lengths(self) -> np.ndarray:
        """int64 [M]: tokens of each example (prompt + response + eos); needs ``pretokenize``."""
        if self._tokens is None:
            raise ValueError("TaskData.lengths needs pretokenize=True")
        return np.diff(self._offsets)

    def label_counts(self) -> np.ndarray:
        """int64 [M]: labelled tokens of each example (its response and eos); needs ``pretokenize``."""
        return self.lengths() - self._prompt_lengths

    def tokenized(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Example ``i`` as int64 ``(input_ids, labels)``, labels -100 on the prompt."""
        if self._tokens is None:
            return self._tokenize([i])[0]
        ids = self._tokens[self._offsets[i]:self._offsets[i + 1]].astype(np.int64)
        labels = ids.copy()
        labels[: self._prompt_lengths[i]] = IGNORE
        return ids, labels

    def __len__(self) -> int:
        return len(self.rows)

    def example(self, i: int) -> tuple[str, str]:
        """(instruction, response) of example ``i``."""
        task, a, b, template = (int(v) for v in self.rows[i])
        name = TASKS[task]
        if name == "item2index":
            return TEMPLATES[name][template].format(text=self.catalog.text(a)), self.item_codes[a]
        if name == "index2item":
            return TEMPLATES[name][template].format(index=self.item_codes[a]), item_title(self.catalog, a)
        sequence = self.sequences[a]
        history = sequence[max(0, b - self.max_history): b]
        codes = ", ".join(self.item_codes[j] for j in history)
        if name == "seqrec":
            return seqrec_instruction(self.item_codes, history, template), self.item_codes[sequence[b]]
        if name == "preferenceobtain":
            return TEMPLATES[name][template].format(history=codes), preference_text(self.facets, history)
        target = int(sequence[b])
        if name == "itemsearch":
            instruction = TEMPLATES[name][template].format(history=codes, query=item_query(self.facets, target),
                                                           preference=preference_text(self.facets, history))
            return instruction, self.item_codes[target]
        response = FUSION_RESPONSES[template]  # fusionseqrec
        description = item_description(self.catalog, target) if response == "description" else ""
        if response == "description" and not description:  # a title-only item: the paired title template
            template += FUSION_RESPONSES.index("title") - FUSION_RESPONSES.index("description")
            response = "title"
        titles = ", ".join(f"\"{item_title(self.catalog, j)}\"" for j in history)
        instruction = TEMPLATES[name][template].format(history=codes, titles=titles)
        answer = {"title": item_title(self.catalog, target), "description": description,
                  "index": self.item_codes[target]}[response]
        return instruction, answer

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch: packed ``input_ids``, ``labels``, ``position_ids``, or padded ``input_ids``,
        ``attention_mask``, ``labels`` (see the class docstring); both with ``label_positions``
        (:func:`genrec.llm.finetune.labelled_positions`, so the loss needs no device sync)."""
        examples = (self._tokenize(indices) if self._tokens is None
                    else [self.tokenized(int(i)) for i in indices])
        return batch_examples(examples, self.format.tokenizer.pad_token_id, self.packing, self.pack_tokens)

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as ``__getitems__`` built it."""
        return batch


def _sample(rng: np.random.Generator, count: int, keep: int | None) -> np.ndarray:
    """Sorted indices of ``keep`` of ``count`` rows drawn without replacement (all rows when ``None`` or more)."""
    if keep is not None and keep < 0:
        raise ValueError(f"TaskData.max_seqrec_examples and max_fusion_examples must be >= 0 or None, got {keep}")
    if keep is None or keep >= count:
        return np.arange(count)
    return np.sort(rng.choice(count, keep, replace=False))


def _task_rows(task: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 [n, 3] rows ``(task index, a, b)``."""
    return np.column_stack([np.full(len(a), TASKS.index(task)), a, b]).astype(np.int64)

