"""Language model as data generator: an instruct LLM writes a short description of every item.

    python -m genrec.augment --dataset ml-100k [--model bundled:smollm2-135m-instruct] [--limit N]
                             [--batch-size B] [--max-new-tokens T]

For each item of a dataset's :class:`~genrec.data.ItemCatalog`, the instruction :data:`PROMPT`
(filled with the item's catalogue text, e.g. ``"Toy Story (1995). Genres: Animation, Children's,
Comedy."``) is rendered with the model's chat template (:class:`genrec.llm.tasks.PromptFormat`) and
answered by greedy decoding, in left-padded batches. The descriptions can then be added to the
catalogue as a text field (:func:`with_descriptions`, rendered as ``"Description: ..."``), the LLM
acting as a data generator for content-based models (the "LLM as data augmenter" idea of ONCE /
GENRE, Liu et al., WSDM 2024, arXiv 2305.06566).

**Cache.** Descriptions are appended to one JSON-lines file per (dataset, model, prompt):
``<data dir>/cache/augment/<dataset>-<model hash>-<prompt hash>.jsonl`` (:func:`cache_path`). The
model hash covers the weights, config and tokenizer files of a local or bundled model (the id of a
hub model); the prompt hash covers the prompt template, the noun, the system prompt and the
generation settings. Each line is one item::

    {"item": "1", "text": "Toy Story (1995). Genres: ...", "description": "...", "finished": true}

``text`` is the catalogue text the prompt was built from: a record whose text no longer matches
the catalogue is stale and regenerated. ``finished`` is false when generation stopped at
``max_new_tokens`` rather than at the end-of-sequence token; such a description is cut after its
last complete sentence when it has one. A generation that is empty once cleaned is recorded with
``"description": null`` (greedy decoding would give it again, so it is not retried) and reported,
never stored as text.

**Resuming.** Items are sorted by prompt length (stable), then cut into fixed batches, so a batch
holds the same items whatever was done before; each batch is written with one ``write``, flushed
and ``fsync``-ed. A restarted run skips the items already in the file and regenerates the rest of
their batches, so an interrupted run, resumed, writes the same descriptions as an uninterrupted
one. A kill during a write can leave a torn last line (no newline): it is cut off on the next
start. Any other unreadable line is an error naming the file and line. A lock (:func:`genrec.io.file_lock`)
keeps two processes from appending to one file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genrec import assets
from genrec.data import ItemCatalog, load_catalog
from genrec.io import LockedError, appended_lines, file_lock, fingerprint, update_file
from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm, resolve_llm
from genrec.progress import progress as progress_bar

__all__ = ["PROMPT", "AugmentError", "AugmentStats", "cache_path", "generate_descriptions", "load_descriptions",
           "main", "model_fingerprint", "with_descriptions"]

PROMPT = "In one or two sentences, describe what kind of {noun} this is and who would enjoy it.\n{Noun}: {text}"
"""Default instruction; ``{text}`` is the catalogue text, ``{noun}``/``{Noun}`` the item noun."""

NOUNS = {"ml-100k": "movie", "ml-1m": "movie", "mind": "news article"}
"""Noun used in the prompt per dataset name or scheme (``mind:<folder>``); any other dataset says ``"item"``."""

_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


class AugmentError(RuntimeError):
    """A description cache is unreadable or locked; the message names the file, the line and the fix."""


@dataclass
class AugmentStats:
    """What one :func:`generate_descriptions` call did.

    Attributes:
        path: The cache file.
        requested: Items asked for.
        cached: Of those, items already in the cache (not regenerated).
        generated: Items generated now.
        empty: Raw item ids whose generation was empty (recorded with a null description), now or before.
        unfinished: Items (of those requested) whose generation hit ``max_new_tokens``.
        seconds: Wall time spent generating (model loading excluded).
    """

    path: Path
    requested: int = 0
    cached: int = 0
    generated: int = 0
    empty: list[str] = field(default_factory=list)
    unfinished: int = 0
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        """Generated items per second of generation."""
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One human-readable line."""
        empty = f"; {len(self.empty)} empty (first: {', '.join(self.empty[:5])})" if self.empty else ""
        return (f"{self.requested} items: {self.cached} cached, {self.generated} generated in {self.seconds:.1f}s "
                f"({self.items_per_second:.2f} items/s), {self.unfinished} cut at max_new_tokens{empty}; "
                f"cache {self.path}")


def noun_of(dataset: str) -> str:
    """The item noun of the prompt for a dataset name (:data:`NOUNS`, by name, then by scheme)."""
    return NOUNS.get(dataset) or NOUNS.get(dataset.partition(":")[0] if ":" in dataset else "", "item")


def model_fingerprint(spec: str) -> str:
    """sha256 of a model: its weight, config and tokenizer files for a folder, the id for a hub model.

    Bundled models (``bundled:<name>``) are resolved to their converted folder first. The bytes are
    hashed, not :func:`genrec.assets.model_identity`'s names, sizes and times (the key of the cheaper
    embedding and layer caches): descriptions take long to regenerate and must follow the weights.
    """
    path = Path(resolve_llm(spec))
    digest = hashlib.sha256()
    if not path.is_dir():
        digest.update(f"hub:{spec}".encode())
        return digest.hexdigest()
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and (p.name in _MODEL_FILES or p.suffix in _WEIGHT_SUFFIXES))
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise AugmentError(f"{path}: no model weights (*.safetensors or *.bin) to fingerprint; give a folder that "
                           "save_pretrained wrote, a bundled model or a hub id")
    for file in files:
        digest.update(file.name.encode() + b"\0")
        update_file(digest, file)
    return digest.hexdigest()


def prompt_fingerprint(prompt: str, noun: str, system_prompt: str | None, max_new_tokens: int) -> str:
    """sha256 of everything besides the model that decides a description."""
    settings = {"prompt": prompt, "noun": noun, "system_prompt": system_prompt, "max_new_tokens": max_new_tokens,
                "decoding": "greedy"}
    return fingerprint(settings)


def cache_path(dataset: str, model: str = BUNDLED_LLM, prompt: str = PROMPT, noun: str | None = None,
               system_prompt: str | None = None, max_new_tokens: int = 64, root: str | Path | None = None) -> Path:
    """``<root>/cache/augment/<dataset>-<model hash 12>-<prompt hash 12>.jsonl`` (root: the data dir)."""
    root = Path(root) if root is not None else assets.data_dir()
    noun = noun or noun_of(dataset)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_") or "dataset"
    model_hash = model_fingerprint(model)[:12]
    prompt_hash = prompt_fingerprint(prompt, noun, system_prompt, max_new_tokens)[:12]
    return root / "cache" / "augment" / f"{name}-{model_hash}-{prompt_hash}.jsonl"


def load_descriptions(path: str | Path, repair: bool = False) -> dict[str, dict]:
    """The records of a description cache by raw item id (a later record of an item wins).

    Args:
        path: A ``.jsonl`` cache file; a missing file has no records.
        repair: Cut off a torn last line (no trailing newline, as a kill during a write leaves it)
            in the file; otherwise such a line is only ignored.

    Raises:
        AugmentError: on a line, other than a torn last one, that is not a record.
    """
    records = {}
    for number, line in appended_lines(path, repair, "genrec.augment"):
        try:
            record = json.loads(line)
            if not isinstance(record.get("item"), str) or not isinstance(record.get("text"), str):
                raise ValueError("no string 'item' and 'text'")
            if record.get("description") is not None and not isinstance(record["description"], str):
                raise ValueError("'description' is neither a string nor null")
        except (ValueError, AttributeError) as error:
            raise AugmentError(f"{path}: line {number} is not a description record ({error}); delete the file (or "
                               "that line) and run genrec.augment again") from None
        records[record["item"]] = record
    return records


def with_descriptions(catalog: ItemCatalog, path: str | Path, field_name: str = "description",
                      require_all: bool = False) -> ItemCatalog:
    """``catalog`` with the cached descriptions added as a text field (``""`` for items without one).

    Only records whose ``text`` matches the item's current catalogue text are used (others are stale).

    Args:
        catalog: The catalogue the descriptions were generated from.
        path: The cache file (:func:`cache_path`).
        field_name: Name of the new field (rendered ``"Description: ..."`` by :meth:`ItemCatalog.text`).
        require_all: Raise unless every item has a non-empty description.

    Raises:
        AugmentError: if ``require_all`` and some item has none, naming how many and the command that
            generates them.
    """
    records = load_descriptions(path)
    descriptions = {}
    for item in range(1, catalog.num_items + 1):
        record = records.get(catalog.item_ids[item])
        if record is not None and record["description"] and record["text"] == catalog.text(item):
            descriptions[catalog.item_ids[item]] = record["description"]
    missing = catalog.num_items - len(descriptions)
    if missing:
        message = (f"{path}: {missing} of {catalog.num_items} items have no description (not generated yet, empty "
                   "or stale)")
        if require_all:
            raise AugmentError(f"{message}; run python -m genrec.augment for this dataset and model first")
        print(f"genrec.augment: {message}; they get an empty {field_name!r} field", file=sys.stderr)
    return catalog.with_field(field_name, descriptions)


def clean_generation(text: str, finished: bool, noun: str) -> str:
    """Collapse whitespace, drop an echoed ``"<Noun>:"`` label, and cut an unfinished text after its last sentence."""
    text = " ".join(text.split())
    text = re.sub(rf"^(?:{re.escape(noun)}|description)\s*:\s*", "", text, flags=re.IGNORECASE)
    if not finished:
        ends = list(_SENTENCE_END.finditer(text))
        if ends:
            text = text[: ends[-1].end()]
    return text.strip()


def generate_descriptions(catalog: ItemCatalog, path: str | Path, model, tokenizer, items: Sequence[int] | None = None,
                          noun: str = "item", prompt: str = PROMPT, system_prompt: str | None = None,
                          batch_size: int = 16, max_new_tokens: int = 64, progress: bool = True,
                          on_batch: Callable[[list[dict]], None] | None = None) -> AugmentStats:
    """Generate and append the descriptions of ``items`` that the cache at ``path`` lacks.

    Args:
        catalog: Item texts.
        path: Cache file (:func:`cache_path` gives the keyed name); created with its folder.
        model: A causal LM (``generate``-capable); put in eval mode here.
        tokenizer: Its tokenizer (with a pad token).
        items: Item indices (1..N) to describe; default every item.
        noun: What an item is, for the prompt (``"movie"``).
        prompt: Instruction template with ``{text}`` (and optionally ``{noun}``, ``{Noun}``).
        system_prompt: System message for chat templates (``None``: the template's default).
        batch_size: Prompts per ``generate`` call.
        max_new_tokens: Longest description in tokens.
        progress: Show progress (a bar on a terminal, plain periodic lines otherwise; :mod:`genrec.progress`).
        on_batch: Called with the records of each batch after they are on disk.

    Returns:
        The :class:`AugmentStats` of the call.
    """
    from genrec.llm.tasks import PromptFormat

    if "{text}" not in prompt:
        raise ValueError(f"the prompt template must contain '{{text}}', got {prompt!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    items = list(range(1, catalog.num_items + 1)) if items is None else [int(item) for item in items]
    bad = [item for item in items if not 1 <= item <= catalog.num_items]
    if bad:
        raise IndexError(f"item indices {bad[:5]} are out of range 1..{catalog.num_items}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = PromptFormat(tokenizer, system_prompt=system_prompt, max_length=1024)
    texts = {item: catalog.text(item) for item in items}
    instructions = {item: prompt.format(text=texts[item], noun=noun, Noun=noun[:1].upper() + noun[1:])
                    for item in items}
    stats = AugmentStats(path, requested=len(items))
    with _locked(path):
        records = load_descriptions(path, repair=True)
        todo = [item for item in items if not _is_done(records.get(catalog.item_ids[item]), texts[item])]
        stats.cached = len(items) - len(todo)
        lengths = dict(zip(items, map(len, fmt.prompt_ids([instructions[item] for item in items]))))
        ordered = sorted(items, key=lambda item: lengths[item])  # stable: equal lengths keep item order
        batches = [ordered[start:start + batch_size] for start in range(0, len(ordered), batch_size)]
        pending = set(todo)
        model.eval()
        bar = _progress(len(todo), progress)
        started = time.perf_counter()
        try:
            with open(path, "a", encoding="utf-8") as handle:
                for batch in batches:
                    batch = [item for item in batch if item in pending]
                    if not batch:
                        continue
                    new = _generate(model, tokenizer, fmt, [instructions[item] for item in batch], max_new_tokens)
                    batch_records = []
                    for item, (text, finished) in zip(batch, new):
                        description = clean_generation(text, finished, noun) or None
                        batch_records.append({"item": catalog.item_ids[item], "text": texts[item],
                                              "description": description, "finished": finished})
                    handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in batch_records))
                    handle.flush()
                    os.fsync(handle.fileno())
                    for record in batch_records:
                        records[record["item"]] = record
                    stats.generated += len(batch)
                    stats.seconds = time.perf_counter() - started
                    bar.update(len(batch))
                    if on_batch is not None:
                        on_batch(batch_records)
        finally:
            stats.seconds = time.perf_counter() - started
            bar.close()
    for item in items:
        record = records.get(catalog.item_ids[item])
        if record is not None and record["text"] == texts[item]:
            stats.empty += [record["item"]] if record["description"] is None else []
            stats.unfinished += not record.get("finished", True)
    return stats


def _is_done(record: dict | None, text: str) -> bool:
    return record is not None and record["text"] == text


def _generate(model, tokenizer, fmt, instructions: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
    """Greedy continuations of left-padded prompts: ``(decoded text, ended with eos)`` per prompt."""
    batch = {key: value.to(model.device) for key, value in fmt.encode_prompts(instructions).items()}
    with torch.inference_mode():
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new_tokens = output[:, batch["input_ids"].shape[1]:].cpu()
    results = []
    for row in new_tokens.tolist():
        ended = tokenizer.eos_token_id in row
        row = row[: row.index(tokenizer.eos_token_id)] if ended else row
        results.append((tokenizer.decode(row, skip_special_tokens=True), ended))
    return results


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive, non-blocking ``flock`` on ``<path>.lock`` for the duration of a run."""
    try:
        with file_lock(path.with_name(path.name + ".lock"), blocking=False):
            yield
    except LockedError:
        raise AugmentError(f"{path}: another process is writing this description cache; wait for it to finish "
                           "(or stop it) and run again") from None


def _progress(total: int, enabled: bool):
    return progress_bar(total=total, desc="describing items", unit="item", disable=not enabled or total == 0)


def main(argv: Sequence[str] | None = None) -> AugmentStats:
    """Command line: generate (or complete) the description cache of a dataset; print a summary and 3 samples."""
    parser = argparse.ArgumentParser(prog="python -m genrec.augment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. ml-100k or mind:<folder> (see "
                        "genrec.data.load_catalog: for MIND every news, clicked or not)")
    parser.add_argument("--model", default=BUNDLED_LLM, help=f"instruct LLM (default {BUNDLED_LLM})")
    parser.add_argument("--limit", type=int, default=None, help="describe only the first N items of the catalogue")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest description in tokens (default 64)")
    parser.add_argument("--noun", default=None, help="what an item is, for the prompt (default: movie for MovieLens, "
                        "else item)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); on a "
                        "CPU shared with other jobs, 1 avoids OpenMP oversubscription, which can slow decoding 5x")
    parser.add_argument("--root", default=None, help="data dir (default: genrec.assets.data_dir())")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    catalog = load_catalog(args.dataset, root=args.root)
    noun = args.noun or noun_of(args.dataset)
    path = cache_path(args.dataset, args.model, noun=noun, max_new_tokens=args.max_new_tokens, root=args.root)
    items = list(range(1, min(args.limit or catalog.num_items, catalog.num_items) + 1))
    model, tokenizer = load_causal_lm(args.model)
    stats = generate_descriptions(catalog, path, model, tokenizer, items, noun=noun, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    print(stats.summary())
    records = load_descriptions(path)
    for item in items[:3]:
        record = records.get(catalog.item_ids[item], {})
        print(f"  {catalog.text(item)} -> {record.get('description') or '(no description)'}")
    return stats


if __name__ == "__main__":
    main()
