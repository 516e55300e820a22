"""In-process fault families of ``benchmarks/faults.py``: data files, assets, caches, checkpoints.

Each family takes a :class:`Tally`, a ``random.Random`` and a scratch folder, makes tiny fixtures,
damages them at random places and records one outcome per case:

* ``clear``: refused with an error of genrec's kinds whose message names the damaged file (or
  binding), or repaired (rebuilt, re-extracted) so that the result equals the undamaged one;
* ``unclear``: refused, but the message does not name the file;
* ``traceback``: an exception genrec does not raise on purpose (TypeError, IndexError, ...);
* ``silent``: accepted, and the result differs from the undamaged one (or bad input went through);
* ``lost``: a run's ``log.jsonl`` or ``metrics.json`` ends up different from an undamaged run's.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from genrec import assets
from genrec.config import ConfigError
from genrec.data import DatasetFileError, load_dataset
from genrec.data.mind import read_mind_news
from genrec.io import save_checked_array
from genrec.llm import pretrained, tiny_causal_lm
from genrec.models import CLLM4Rec, LCRec, SASRec
from genrec.models.content import PretrainedLMContent
from genrec.semantic_ids import SemanticIDs, SemanticIDsError
from genrec.semantic_ids import embed as embed_module
from genrec.training.checkpoint import load_tensors, save_tensors
from genrec.training.run_folder import RunFolderBusy

USER_ERRORS = (ConfigError, DatasetFileError, assets.AssetError, SemanticIDsError, RunFolderBusy, ValueError,
               KeyError, OSError, FloatingPointError)
"""What genrec raises on purpose (and what the trainers turn into one line)."""


class Tally:
    """Outcome per case: ``{"family", "case", "outcome", "detail"}``."""

    def __init__(self):
        self.cases: list[dict] = []

    def add(self, family: str, case: str, outcome: str, detail: str = "") -> None:
        self.cases.append({"family": family, "case": case, "outcome": outcome, "detail": detail[:400]})

    def refused(self, family: str, case: str, action, names: list[str]) -> None:
        """``action()`` must raise a genrec error naming one of ``names``."""
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                action()
        except USER_ERRORS as error:
            clear = any(name in str(error) for name in names)
            self.add(family, case, "clear" if clear else "unclear", f"{type(error).__name__}: {error}")
            return
        except Exception as error:  # noqa: BLE001 - classifying every other exception is the point
            self.add(family, case, "traceback", f"{type(error).__name__}: {error}")
            return
        self.add(family, case, "silent", "accepted")

    def same(self, family: str, case: str, action, reference, names: list[str]) -> None:
        """``action()`` must return what equals ``reference`` (repaired) or raise a genrec error naming a file."""
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                value = action()
        except USER_ERRORS as error:
            clear = any(name in str(error) for name in names)
            self.add(family, case, "clear" if clear else "unclear", f"refused: {type(error).__name__}: {error}")
            return
        except Exception as error:  # noqa: BLE001
            self.add(family, case, "traceback", f"{type(error).__name__}: {error}")
            return
        good = value == reference if not isinstance(reference, np.ndarray) else np.array_equal(value, reference)
        self.add(family, case, "clear" if good else "silent", stderr.getvalue().strip()[-300:])


def damage(path: Path, rng, how: str) -> None:
    """Truncate at a random byte, flip a random byte, empty, or append garbage to ``path``."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: rng.randrange(0, max(1, len(data) - 1))]
    elif how == "flip":
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    elif how == "empty":
        data = bytearray()
    elif how == "append":
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    path.write_bytes(bytes(data))


# --- data files -----------------------------------------------------------------------------------

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def write_recbole(folder: Path, rng) -> str:
    folder.mkdir(parents=True)
    items = [f"m{i}" for i in range(rng.randrange(15, 30))]
    rows = [f"u{u}\t{rng.choice(items)}\t{rng.randrange(1, 6)}\t{rng.randrange(10**8, 10**9)}"
            for u in range(rng.randrange(5, 15)) for _ in range(rng.randrange(4, 9))]
    (folder / f"{folder.name}.inter").write_text("\n".join([INTER_HEADER, *rows]) + "\n")
    lines = [f"{item}\tTitle {item}\t19{rng.randrange(10, 99)}\tDrama Comedy" for item in items]
    (folder / f"{folder.name}.item").write_text("\n".join(["item_id:token\ttitle:token_seq\tyear:token\t"
                                                           "genres:token_seq", *lines]) + "\n")
    return f"recbole:{folder}"


def _edit_row(path: Path, rng, edit) -> None:
    lines = path.read_text().split("\n")
    at = rng.randrange(1, len(lines) - 1)
    lines[at] = edit(lines[at].split("\t"))
    path.write_text("\n".join(lines))


def _cut_mid_line(path: Path, rng) -> None:
    data = path.read_bytes()
    start = data.index(b"\n") + 2
    offsets = [i for i in range(start, len(data) - 1) if data[i - 1:i] != b"\n"]
    path.write_bytes(data[: rng.choice(offsets)])


def _with_value(column: int, value: str):
    return lambda fields: "\t".join(fields[:column] + [value] + fields[column + 1:])


RECBOLE_FAULTS = {
    "cut_mid_line": lambda p, rng: _cut_mid_line(p, rng),
    "nan_timestamp": lambda p, rng: _edit_row(p, rng, _with_value(3, rng.choice(["nan", "NaN", "inf", "-inf"]))),
    "nan_rating": lambda p, rng: _edit_row(p, rng, _with_value(2, rng.choice(["nan", "inf"]))),
    "text_timestamp": lambda p, rng: _edit_row(p, rng, _with_value(3, rng.choice(["abc", "", "1e", "--1"]))),
    "missing_field": lambda p, rng: _edit_row(p, rng, lambda f: "\t".join(f[:-1])),
    "extra_field": lambda p, rng: _edit_row(p, rng, lambda f: "\t".join(f + ["x"])),
    "header_only": lambda p, rng: p.write_text(INTER_HEADER + "\n"),
    "empty_file": lambda p, rng: p.write_text(""),
    "bad_utf8": lambda p, rng: p.write_bytes(p.read_bytes().replace(b"\t", b"\t\xff", 1 + rng.randrange(3))),
    "deleted": lambda p, rng: p.unlink(),
}


def data_family(tally: Tally, rng, work: Path, rounds: int) -> None:
    """RecBole, Amazon, RecAI and MIND files damaged at random; loading (and asking for item text) must refuse."""
    def load_and_text(name):
        return load_dataset(name)[1].texts(require_text=True)

    for n in range(rounds):
        for fault, apply in RECBOLE_FAULTS.items():
            name = write_recbole(work / f"d{n}-{fault}", rng)
            path = Path(name[len("recbole:"):]) / f"d{n}-{fault}.inter"
            apply(path, rng)
            tally.refused("data", f"inter:{fault}", lambda: load_and_text(name), [path.name])
        name = write_recbole(work / f"d{n}-item", rng)
        item_path = Path(name[len("recbole:"):]) / f"d{n}-item.item"
        fault = rng.choice(["blank_text", "cut_mid_line", "header_only"])
        if fault == "blank_text":
            _edit_row(item_path, rng, lambda f: "\t".join([f[0], "", "", ""]))
        else:
            RECBOLE_FAULTS[fault](item_path, rng)
        tally.refused("data", f"item:{fault}", lambda: load_and_text(name), [item_path.name])
        _amazon_case(tally, rng, work / f"amazon{n}")
    for n in range(max(1, rounds // 2)):
        news = work / f"news{n}.tsv"
        rows = [f"N{i}\tcat\tsub\tTitle {i}\tAbstract\thttp://x\t[]\t[]" for i in range(5)]
        rows[rng.randrange(5)] = rng.choice(["N9\tcat\tTitle", "N9\tcat\tsub\tT\tA\tu\t[]\t[]\textra"])
        news.write_text("\n".join(rows) + "\n")
        tally.refused("data", "mind:columns", lambda: read_mind_news(news), [news.name])
    empty = work / "empty_news.tsv"
    empty.write_text("")
    tally.refused("data", "mind:empty", lambda: read_mind_news(empty), [empty.name])


def _amazon_case(tally: Tally, rng, folder: Path) -> None:
    folder.mkdir()
    reviews, meta = folder / "reviews_Toys_5.json.gz", folder / "meta_Toys.json.gz"
    records = [{"reviewerID": f"u{i % 4}", "asin": f"a{i % 7}", "overall": 5.0, "unixReviewTime": 1000 + i}
               for i in range(30)]
    fault = rng.choice(["nan_time", "cut_gzip", "bad_json", "no_asin"])
    lines = [json.dumps(record) for record in records]
    at = rng.randrange(len(lines))
    if fault == "nan_time":
        lines[at] = json.dumps({**records[at], "unixReviewTime": float(rng.choice(["nan", "inf"]))})
    elif fault == "bad_json":
        lines[at] = lines[at][: rng.randrange(1, len(lines[at]) - 1)]
    elif fault == "no_asin":
        lines[at] = json.dumps({k: v for k, v in records[at].items() if k != "asin"})
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    reviews.write_bytes(data[: rng.randrange(10, len(data) - 8)] if fault == "cut_gzip" else data)
    meta.write_bytes(gzip.compress("".join(f"{{'asin': 'a{i}', 'title': 'Toy {i}'}}\n" for i in range(7)).encode()))
    tally.refused("data", f"amazon:{fault}", lambda: load_dataset(f"amazon:{folder}")[1].texts(require_text=True),
                  [reviews.name])


# --- extracted assets -----------------------------------------------------------------------------

def assets_family(tally: Tally, rng, work: Path, rounds: int) -> None:
    """A pinned toy archive extracted, then a member or the marker damaged: fetch must restore it."""
    members = {"pkg/toy/toy.inter": ("\n".join([INTER_HEADER] + [f"u{i}\tm{i % 5}\t4\t{i}" for i in range(40)]) + "\n"),
               "pkg/toy/toy.item": "item_id:token\ttitle:token_seq\n" + "".join(f"m{i}\tT{i}\n" for i in range(5))}
    archive = work / "toy.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for member, text in members.items():
            bundle.writestr(member, text)
    asset = assets.Asset("toy", url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
                         members=tuple(members), strip="pkg/toy/")
    originals = {member[len("pkg/toy/"):]: text.encode() for member, text in members.items()}
    root = work / "root"
    for n in range(rounds):
        folder = assets.fetch(asset, root, quiet=True)
        fault = rng.choice(["truncate", "flip", "empty", "append", "delete", "marker", "record"])
        file = rng.choice(sorted(originals))
        if fault == "delete":
            (folder / file).unlink()
        elif fault == "marker":
            (folder / assets.MARKER).write_text("garbage")
        elif fault == "record":
            (root / "cache" / "assets" / "toy.json").write_text(rng.choice(["", "{", "[1, 2]", '{"toy.inter": 3}']))
        else:
            damage(folder / file, rng, fault)

        def fetched():
            out = assets.fetch(asset, root, quiet=True)
            return {name: (out / name).read_bytes() for name in originals}

        tally.same("assets", f"extracted:{fault}", fetched, originals, [file, "toy"])


# --- caches ---------------------------------------------------------------------------------------

def cache_family(tally: Tally, rng, work: Path, rounds: int, layer_rounds: int) -> None:
    """Embedding, frozen-layer and converted-LLM caches damaged at random: never used, rebuilt."""
    os.environ["GENREC_DATA_DIR"] = str(work / "data")
    encode = getattr(embed_module, "_encode")
    setattr(embed_module, "_encode", lambda texts, *a: np.random.default_rng(len(texts)).random(
        (len(texts), 8), dtype=np.float32))
    try:
        texts = [f"item {i} text" for i in range(rng.randrange(5, 50))]
        reference = embed_module.embed_texts(texts)
        path = next((work / "data" / "cache" / "embeddings").glob("*.npy"))
        for _ in range(rounds):
            fault = _cache_fault(path, rng, lambda tmp: np.save(open(tmp, "wb"), reference[:-1]))
            tally.same("caches", f"embeddings:{fault}", lambda: embed_module.embed_texts(texts), reference, [path.name])
    finally:
        setattr(embed_module, "_encode", encode)
        os.environ.pop("GENREC_DATA_DIR")
    llama = str(tiny_causal_lm(work / "llama", "llama", seed=1))
    texts = ["Toy Story (1995).", "GoldenEye (1995).", "Four Rooms (1995).", "Get Shorty (1995)."]
    op = PretrainedLMContent(texts, dim=8, path=llama, frozen_layers=1, cache_dir=str(work / "layers"))
    good = np.load(op.cache_path)
    for _ in range(layer_rounds):
        fault = _cache_fault(op.cache_path, rng, lambda tmp: np.save(open(tmp, "wb"), good[:, :1]))

        def rebuilt():
            again = PretrainedLMContent(texts, dim=8, path=llama, frozen_layers=1, cache_dir=str(work / "layers"))
            return np.load(again.cache_path)

        tally.same("caches", f"layers:{fault}", rebuilt, good, [op.cache_path.name])
    _llm_folder_cases(tally, rng, work / "llm", rounds)


def _cache_fault(path: Path, rng, write_wrong_shape) -> str:
    fault = rng.choice(["truncate", "flip", "empty", "append", "wrong_shape", "no_record", "bad_record"])
    if fault == "wrong_shape":
        save_checked_array(path, write_wrong_shape)
    elif fault == "no_record":
        path.with_name(path.name + ".json").unlink(missing_ok=True)
    elif fault == "bad_record":
        path.with_name(path.name + ".json").write_text(rng.choice(["", "{", '{"files": {}}', "[]"]))
    else:
        damage(path, rng, fault)
    return fault


def _llm_folder_cases(tally: Tally, rng, root: Path, rounds: int) -> None:
    calls = []
    fetch, convert = assets.fetch, getattr(pretrained, "_convert")

    def fake_convert(source, gguf, out, name):
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
        (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        calls.append(out)

    assets.fetch = lambda asset, root=None: root
    setattr(pretrained, "_convert", fake_convert)
    try:
        asset = assets.ASSETS["smollm2-135m-instruct"]
        folder = pretrained.convert_gguf(asset, root)
        originals = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
        for _ in range(rounds):
            file = rng.choice(sorted(originals))
            fault = rng.choice(["truncate", "flip", "empty", "append", "delete"])
            (folder / file).unlink() if fault == "delete" else damage(folder / file, rng, fault)

            def loaded():
                out = pretrained.convert_gguf(asset, root)
                return {name: (out / name).read_bytes() for name in originals}

            tally.same("caches", f"llm_folder:{fault}", loaded, originals, [file])
    finally:
        assets.fetch = fetch
        setattr(pretrained, "_convert", convert)


# --- checkpoints and semantic IDs -------------------------------------------------------------------

def checkpoint_family(tally: Tally, rng, work: Path, rounds: int) -> None:
    """Checkpoints and semantic_ids.json damaged at random: loading must refuse (or read them unchanged)."""
    for n in range(rounds):
        tensors = {f"layer{i}.weight": torch.randn(rng.randrange(1, 40), rng.randrange(1, 40)) for i in range(3)}
        path = work / f"ckpt{n}.safetensors"
        save_tensors(path, tensors, {"step": n})
        fault = rng.choice(["truncate", "flip", "flip", "empty", "append"])
        damage(path, rng, fault)

        def loaded():
            got, meta = load_tensors(path)
            return sorted(got) == sorted(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors)

        tally.same("checkpoints", f"safetensors:{fault}", loaded, True, [path.name])
    interactions, _ = load_dataset(write_recbole(work / "sid-data", rng))
    sizes = [8, 8]
    flat = np.array(rng.sample(range(64), interactions.num_items))
    ids = SemanticIDs.from_codes(np.stack(np.unravel_index(flat, sizes), axis=1), sizes, interactions)
    for n in range(rounds):
        path = work / f"sid{n}.json"
        ids.save(path)
        payload = json.loads(path.read_text())
        items = payload["items"]
        first, second = list(items)[:2]
        fault = rng.choice(["truncate", "drop_item", "duplicate", "too_large", "negative", "levels", "unknown_item",
                            "fingerprint"])
        if fault == "truncate":
            damage(path, rng, "truncate")
        else:
            if fault == "drop_item":
                items.pop(rng.choice(list(items)))
            elif fault == "duplicate":
                items[second] = list(items[first])
            elif fault == "too_large":
                items[first] = [8, 0]
            elif fault == "negative":
                items[first] = [-1, 0]
            elif fault == "levels":
                items[first] = [1, 2, 3]
            elif fault == "unknown_item":
                items["not-an-item"] = [7, 7]
            else:
                payload["fingerprint"] = "0" * 16
            path.write_text(json.dumps(payload))
        tally.refused("checkpoints", f"semantic_ids:{fault}", lambda: SemanticIDs.load(path, interactions), [path.name])


# --- saved models ---------------------------------------------------------------------------------

def model_family(tally: Tally, rng, work: Path, rounds: int) -> None:
    """Saved SASRec, CLLM4Rec and LC-Rec folders with a random file damaged: from_pretrained must refuse
    it by name, or load a model whose recommendations equal the undamaged one's."""
    interactions, _ = load_dataset(write_recbole(work / "data", rng))
    ids = list(interactions.item_ids)
    history = [[ids[1], ids[2], ids[3]]]
    llama = str(tiny_causal_lm(work / "llama", "llama", seed=2))
    torch.manual_seed(0)
    sasrec = SASRec(num_items=interactions.num_items, max_history=8, hidden_size=16, num_heads=2, inner_size=32)
    sasrec.set_item_ids(ids)
    cllm = CLLM4Rec(num_users=interactions.num_users, num_items=interactions.num_items, pretrained_path=llama, d_rec=8,
                    max_history=4)
    cllm.set_ids(list(interactions.user_ids), ids)
    lcrec = LCRec(pretrained_path=llama, num_beams=4)
    codes = np.stack(np.unravel_index(np.arange(interactions.num_items), (8, 8)), axis=1)
    lcrec.attach(SemanticIDs.from_codes(codes, [8, 8], interactions))
    for name, model, cls in (("sasrec", sasrec, SASRec), ("cllm4rec", cllm, CLLM4Rec), ("lcrec", lcrec, LCRec)):
        saved = work / name
        model.eval().save_pretrained(saved)
        reference = model.recommend(history, k=3)
        for n in range(rounds):
            copy = work / f"{name}{n}"
            shutil.copytree(saved, copy, symlinks=True)
            files = sorted(path for path in copy.rglob("*") if path.is_file())
            target = rng.choice(files)
            fault = rng.choice(["truncate", "flip", "flip", "empty", "append", "delete"])
            target.unlink() if fault == "delete" else damage(target, rng, fault)
            tally.same("models", f"{name}:{target.relative_to(copy)}:{fault}",
                       lambda: cls.from_pretrained(copy).recommend(history, k=3), reference, [target.name, copy.name])
