"""Instruction-tuning tasks that teach a causal LLM to speak in item codes (LC-Rec).

LC-Rec (Zheng et al., ICDE 2024, arXiv 2311.09049) fine-tunes an LLM on prompts in which every
item is written as its semantic ID, one added token per level (``<C0_17><C1_3><C2_40>``). Three of
its task families are implemented here, each with a pool of paraphrased instructions; one is drawn
per example from a seeded generator, so a run is reproducible:

* ``seqrec``: the codes of a user's last (at most ``max_history``) items -> the codes of the next
  item. Examples slide over the **training** sequences only (every prefix of ``split.train``; the
  valid and test targets are never seen), as LC-Rec does.
* ``item2index``: an item's text -> its codes (aligns language with the new tokens).
* ``index2item``: an item's codes -> its title.

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
from genrec.llm.finetune import IGNORE, labelled_positions, pack_examples, pad_examples

__all__ = ["TASKS", "TEMPLATES", "PromptFormat", "TaskData", "item_title"]

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "seqrec": (
        "Here are the items a user interacted with, in order: {history}. Predict the next item the user "
        "will interact with.",
        "A user's interaction history, oldest first: {history}. Which item comes next?",
        "Given the items this user chose in this order: {history}, recommend the item they will choose next.",
        "The user has engaged with {history}, in that order. What will they engage with next?",
        "Based on the sequence {history}, what is the user's next item?",
        "Items consumed so far (chronological): {history}. Recommend one item to follow.",
        "Here is what a user liked, in order: {history}. Name the item they are most likely to like next.",
        "Using the history {history}, forecast the next item for this user.",
    ),
    "item2index": (
        "Which item is described as \"{text}\"? Answer with its item index.",
        "Give the index of this item: {text}",
        "Item description: {text}. What is its index?",
        "Find the item index that corresponds to \"{text}\".",
        "What index identifies the item \"{text}\"?",
        "Map this item to its index: {text}",
    ),
    "index2item": (
        "What is the title of item {index}?",
        "Item {index} is called what?",
        "Tell me the title of the item with index {index}.",
        "Which item does the index {index} stand for? Give its title.",
        "Name the item whose index is {index}.",
        "Decode the item index {index} into its title.",
    ),
}
"""Instruction pools; the first template of ``seqrec`` is the one used for evaluation."""

TASKS = tuple(TEMPLATES)


def item_title(catalog: ItemCatalog, item: int) -> str:
    """``"Title (year)"`` of item index ``item`` (the catalogue text when it has no title field)."""
    title = catalog.fields.get("title", [""] * len(catalog.item_ids))[item]
    year = catalog.fields.get("year", [""] * len(catalog.item_ids))[item]
    if not title:
        return catalog.text(item)
    return f"{title} ({year})" if year else title


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
        catalog: item texts for ``item2index`` / ``index2item``.
        prompt_format: renders and tokenises examples.
        tasks: which of :data:`TASKS` to train on.
        max_history: most recent items in a ``seqrec`` history (LC-Rec: 20).
        max_seqrec_examples: keep this many ``seqrec`` windows, drawn at random (``None``: all).
        item_repeats: examples per item for ``item2index`` and ``index2item`` (each a fresh template).
        seed: seeds template choice and window sampling.
        pretokenize: tokenise every example once at construction (else each batch when fetched).
        packing: padding-free packed batches (else right-padded ones).
        pack_tokens: most tokens in a packed row (``None``: the whole batch in one row; rows
            widen to a longer example). Attention runs over whole rows, so short rows are
            cheaper: 256 costs a few per cent of padding and little attention on LC-Rec's examples.
    """

    def __init__(self, train_sequences: Sequence[np.ndarray], item_codes: Sequence[str], catalog: ItemCatalog,
                 prompt_format: PromptFormat, tasks: Sequence[str] = TASKS, max_history: int = 20,
                 max_seqrec_examples: int | None = None, item_repeats: int = 1, seed: int = 0,
                 pretokenize: bool = True, packing: bool = True, pack_tokens: int | None = 256):
        unknown = [task for task in tasks if task not in TEMPLATES]
        if unknown or not tasks:
            raise ValueError(f"unknown or no LC-Rec tasks {list(tasks)!r}; choose from {', '.join(TASKS)}")
        if max_history < 1:
            raise ValueError(f"TaskData.max_history must be >= 1, got {max_history}")
        if pack_tokens is not None and pack_tokens < 1:
            raise ValueError(f"TaskData.pack_tokens must be >= 1 or None, got {pack_tokens}")
        self.packing, self.pack_tokens = packing, pack_tokens
        self.item_codes, self.catalog, self.format = list(item_codes), catalog, prompt_format
        self.max_history = max_history
        rng = np.random.default_rng(seed)
        parts = []  # rows of (task, a, b, c): seqrec (user, end), item tasks (item, 0)
        if "seqrec" in tasks:
            users = np.concatenate([np.full(max(len(s) - 1, 0), u) for u, s in enumerate(train_sequences)])
            ends = np.concatenate([np.arange(1, len(s)) for s in train_sequences if len(s) > 1])
            if max_seqrec_examples is not None and max_seqrec_examples < len(ends):
                keep = np.sort(rng.choice(len(ends), max_seqrec_examples, replace=False))
                users, ends = users[keep], ends[keep]
            parts.append(np.column_stack([np.zeros_like(ends), users, ends]))
        items = np.tile(np.arange(1, len(self.item_codes)), item_repeats)
        for task in ("item2index", "index2item"):
            if task in tasks:
                parts.append(np.column_stack([np.full_like(items, TASKS.index(task)), items, np.zeros_like(items)]))
        rows = np.concatenate(parts)
        templates = rng.integers(0, 1 << 30, len(rows)) % np.array([len(TEMPLATES[t]) for t in TASKS])[rows[:, 0]]
        self.rows = np.column_stack([rows, templates]).astype(np.int64)
        self.sequences = list(train_sequences)
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
        if name == "seqrec":
            sequence = self.sequences[a]
            history = sequence[max(0, b - self.max_history): b]
            return seqrec_instruction(self.item_codes, history, template), self.item_codes[sequence[b]]
        if name == "item2index":
            return TEMPLATES[name][template].format(text=self.catalog.text(a)), self.item_codes[a]
        return TEMPLATES[name][template].format(index=self.item_codes[a]), item_title(self.catalog, a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch: packed ``input_ids``, ``labels``, ``position_ids``, or padded ``input_ids``,
        ``attention_mask``, ``labels`` (see the class docstring); both with ``label_positions``
        (:func:`genrec.llm.finetune.labelled_positions`, so the loss needs no device sync)."""
        examples = (self._tokenize(indices) if self._tokens is None
                    else [self.tokenized(int(i)) for i in indices])
        pad = self.format.tokenizer.pad_token_id
        if self.packing:
            return pack_examples(examples, pad, self.pack_tokens)
        batch = pad_examples(examples, pad)
        return {**batch, "label_positions": labelled_positions(batch["labels"])}

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as ``__getitems__`` built it."""
        return batch
