"""Faults and bad input (issue 15): every kind gives a clear error or is repaired, never a silent result.

Kinds: data files (non-finite values, files cut short, header-only files, items without text), extracted
assets (a truncated or altered member is extracted again), caches (embeddings, frozen LM layers, the
converted LLM folder: rebuilt when they do not match their record), checkpoints and run logs, and the
model APIs (a saved LC-Rec whose semantic IDs lack an item, ``recommend([])``, ``k`` beyond the
catalogue). Tiny fixtures only; ``benchmarks/faults.py`` runs the larger randomized sweep.
"""

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import gin
import numpy as np
import pytest
import torch

from genrec import assets
from genrec.data import DatasetFileError, load_dataset
from genrec.data.mind import read_mind_news
from genrec.data.readers import read_amazon
from genrec.io import load_checked_array, save_checked_array
from genrec.llm import pretrained, tiny_causal_lm
from genrec.models import CLLM4Rec, LCRec, MostPopular
from genrec.models.content import PretrainedLMContent
from genrec.semantic_ids import SemanticIDs, SemanticIDsError
from genrec.semantic_ids import embed as embed_module
from genrec.data.windows import SequenceWindows
from genrec.training import fit
from genrec.training.checkpoint import load_tensors, save_tensors
from genrec.training.run_folder import RunLog

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ROWS = [f"u{u}\ti{(u * 3 + k) % 12}\t4\t{k}" for u in range(8) for k in range(4)]  # 8 users x 4 items, 12 items
ITEMS = [f"i{i}\tFilm {i}\t199{i % 10}\tDrama" for i in range(12)]


def recbole(folder: Path, rows=ROWS, items=ITEMS, end="\n") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.inter").write_text("\n".join([HEADER, *rows]) + end)
    if items is not None:
        header = "item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq"
        (folder / f"{folder.name}.item").write_text("\n".join([header, *items]) + "\n")
    return f"recbole:{folder}"


# --- data files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("column, value", [("timestamp", "nan"), ("timestamp", "inf"), ("rating", "-inf")])
def test_non_finite_values_are_refused_with_file_and_line(tmp_path, column, value):
    rows = list(ROWS)
    user, item, rating, time = rows[2].split("\t")
    rows[2] = "\t".join([user, item, value if column == "rating" else rating, value if column == "timestamp" else time])
    with pytest.raises(DatasetFileError, match=rf"bad.inter: column '{column}' has the non-finite value .* on line 4"):
        load_dataset(recbole(tmp_path / "bad", rows))


def test_files_cut_short_or_without_rows_are_refused(tmp_path):
    with pytest.raises(DatasetFileError, match=r"cut.inter: line 33 ends without a newline.*cut short"):
        load_dataset(recbole(tmp_path / "cut", ROWS[:-1] + [ROWS[-1][:-1]], end=""))
    with pytest.raises(DatasetFileError, match=r"short.inter: line 4 has 3 tab-separated fields, the header has 4"):
        load_dataset(recbole(tmp_path / "short", ROWS[:2] + [ROWS[2].rsplit("\t", 1)[0]] + ROWS[3:]))
    with pytest.raises(DatasetFileError, match=r"empty.inter: has a header but no rows"):
        load_dataset(recbole(tmp_path / "empty", []))
    with pytest.raises(DatasetFileError, match=r"items.item: has a header but no rows"):
        load_dataset(recbole(tmp_path / "items", ROWS, []))


def test_items_without_text_are_refused_where_text_is_needed(tmp_path):
    items = [*ITEMS[:3], "i3\t\t\t", *ITEMS[4:]]
    _, catalog = load_dataset(recbole(tmp_path / "blank", items=items))
    with pytest.raises(ValueError, match=r"item 'i3' \(and 0 more\) has no text: .* in .*blank.item"):
        catalog.texts(require_text=True)
    _, catalog = load_dataset(recbole(tmp_path / "none", items=None))
    with pytest.raises(ValueError, match=r"item 'i0' \(and 11 more\) has no text: its fields \(none\)"):
        catalog.texts(require_text=True)
    _, catalog = load_dataset(recbole(tmp_path / "full"))
    assert catalog.texts(require_text=True)[0] == "Film 0 (1990). Genres: Drama."


def test_amazon_nan_review_time_and_empty_mind_news(tmp_path):
    reviews, meta = tmp_path / "reviews_X_5.json.gz", tmp_path / "meta_X.json.gz"
    lines = [{"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1},
             {"reviewerID": "u", "asin": "b", "overall": 4.0, "unixReviewTime": float("nan")}]
    reviews.write_bytes(gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode()))
    meta.write_bytes(gzip.compress(b"{'asin': 'a', 'title': 'A'}\n"))
    with pytest.raises(DatasetFileError, match=r"reviews_X_5.json.gz: column 'unixReviewTime' has the non-finite "
                                               r"value nan on line 2"):
        read_amazon(reviews, meta, "amazon-X")
    (tmp_path / "news.tsv").write_text("")
    with pytest.raises(DatasetFileError, match=r"news.tsv: no news \(the file is empty\)"):
        read_mind_news(tmp_path / "news.tsv")


# --- extracted assets ---------------------------------------------------------------------------

def toy_asset(tmp_path: Path) -> assets.Asset:
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("pkg/toy/toy.inter", "\n".join([HEADER, *ROWS]) + "\n")
        bundle.writestr("pkg/toy/toy.item", "\n".join(["item_id:token\ttitle:token_seq", "i1\tA"]) + "\n")
    return assets.Asset("toy", url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
                        members=("pkg/toy/toy.inter", "pkg/toy/toy.item"), strip="pkg/toy/")


def test_truncated_or_altered_extracted_files_are_extracted_again(tmp_path, capsys):
    asset = toy_asset(tmp_path)
    folder = assets.fetch(asset, tmp_path / "cache", quiet=True)
    good = (folder / "toy.inter").read_bytes()
    (folder / "toy.inter").write_bytes(good[: len(good) // 2])  # truncated
    assert (assets.fetch(asset, tmp_path / "cache", quiet=True) / "toy.inter").read_bytes() == good
    assert "toy.inter has" in capsys.readouterr().err
    (folder / "toy.inter").write_bytes(good.replace(b"u1", b"u9", 1))  # same size, other bytes
    assert (assets.fetch(asset, tmp_path / "cache", quiet=True) / "toy.inter").read_bytes() == good
    assert "does not match the sha256" in capsys.readouterr().err


def test_a_folder_extracted_before_records_gets_one(tmp_path):
    asset = toy_asset(tmp_path)
    folder = assets.fetch(asset, tmp_path / "cache", quiet=True)
    record = tmp_path / "cache" / "cache" / "assets" / "toy.json"
    record.unlink()
    Path(asset.url[len("file://"):]).unlink()  # no archive: the folder must be accepted as it is
    assert assets.fetch(asset, tmp_path / "cache", quiet=True) == folder and record.is_file()


# --- caches ---------------------------------------------------------------------------------------

def test_embedding_cache_is_rebuilt_when_it_does_not_match(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path))
    calls = []

    def encode(texts, *args):
        calls.append(len(texts))
        return np.arange(len(texts) * 4, dtype=np.float32).reshape(len(texts), 4)

    monkeypatch.setattr(embed_module, "_encode", encode)
    texts = ["a film", "another film", "a third"]
    first = embed_module.embed_texts(texts)
    assert np.array_equal(embed_module.embed_texts(texts), first) and len(calls) == 1
    path = next((tmp_path / "cache" / "embeddings").glob("*.npy"))
    faults = [lambda: path.write_bytes(path.read_bytes()[:-5]),  # truncated
              lambda: path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\1"),  # same size, altered
              lambda: save_checked_array(path, lambda tmp: np.save(open(tmp, "wb"), first[:2])),  # wrong rows
              lambda: path.with_name(path.name + ".json").unlink()]  # no record
    for number, fault in enumerate(faults, start=2):
        fault()
        assert np.array_equal(embed_module.embed_texts(texts), first) and len(calls) == number
        assert f"ignoring unreadable embedding cache ({path}" in capsys.readouterr().err
        assert load_checked_array(path)[1] is None


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("faults") / "llama", "llama", seed=3))


def test_layer_cache_is_really_rebuilt(tiny_llama, tmp_path, capsys):
    texts = ["Toy Story (1995).", "GoldenEye (1995).", "Four Rooms (1995)."]
    op = PretrainedLMContent(texts, dim=8, path=tiny_llama, frozen_layers=1, cache_dir=str(tmp_path))
    path = op.cache_path
    good = np.load(path)
    for fault in (lambda: path.write_bytes(path.read_bytes()[:-16]),
                  lambda: save_checked_array(path, lambda tmp: np.save(open(tmp, "wb"), good[:, :2])),
                  lambda: path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\1")):
        fault()
        again = PretrainedLMContent(texts, dim=8, path=tiny_llama, frozen_layers=1, cache_dir=str(tmp_path))
        assert "ignoring unreadable layer cache" in capsys.readouterr().err
        assert again.cache_path == path and np.array_equal(np.load(path), good)
        assert load_checked_array(path, good.shape)[1] is None


def test_converted_llm_folder_is_checked_against_its_record(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(assets, "fetch", lambda asset, root=None: tmp_path / "raw")

    def convert(source, gguf, out, name):
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"model_type": "llama"}')
        calls.append(out)

    monkeypatch.setattr(pretrained, "_convert", convert)
    asset = assets.ASSETS["smollm2-135m-instruct"]
    folder = pretrained.convert_gguf(asset, tmp_path)
    assert pretrained.convert_gguf(asset, tmp_path) == folder and len(calls) == 1
    (folder / "config.json").write_text('{"model_type": "gpt2!"}')  # same size, altered
    assert pretrained.convert_gguf(asset, tmp_path) == folder and len(calls) == 2
    assert "config.json does not match the sha256" in capsys.readouterr().err


# --- checkpoints and run logs ---------------------------------------------------------------------

def test_corrupt_checkpoint_and_torn_log_line(tmp_path):
    save_tensors(tmp_path / "ckpt.safetensors", {"w": torch.arange(64, dtype=torch.float32)}, {"step": 3})
    data = bytearray((tmp_path / "ckpt.safetensors").read_bytes())
    data[-8] ^= 0xFF
    (tmp_path / "ckpt.safetensors").write_bytes(bytes(data))
    with pytest.raises(Exception, match="ckpt.safetensors") as error:
        load_tensors(tmp_path / "ckpt.safetensors")
    assert "Traceback" not in str(error.value)
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # killed mid-write
    RunLog(log, enabled=True).truncate_after(2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]


def _tiny_fit(run_dir, **bindings):
    """The shared loop on a 3-weight regression, settings bound through gin as the trainers do."""
    class Pairs(torch.utils.data.TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return {"x": x, "y": y}

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, x, y):
            return None, ((self.lin(x).squeeze(-1) - y) ** 2).mean()

    def evaluate(model, which, accelerator):
        return {"neg_loss": -float(model.lin.weight.abs().sum())}

    gin.clear_config()
    gin.parse_config([f"fit.{k} = {v!r}" for k, v in {"max_epochs": 2, "batch_size": 8, **bindings}.items()])
    torch.manual_seed(0)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    try:
        return fit(Linear(), Pairs(x, x.sum(1)), evaluate, run_dir=run_dir, info={}, seed=1, metric="neg_loss")
    finally:
        gin.clear_config()


def test_a_corrupt_metrics_json_is_evaluated_again_and_logged_once(tmp_path, capsys):
    first = _tiny_fit(tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"best_step": ', '"best_step": 1', 1))  # valid JSON, wrong value
    again = _tiny_fit(tmp_path / "run")
    assert "disagrees with the checkpoint" in capsys.readouterr().err
    assert again["test"] == first["test"] and json.loads(metrics.read_text())["best_step"] == first["best_step"]
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum("test" in record for record in records) == 1
    with pytest.raises(ValueError, match=r"fit.mixed_precision = 'fp8' cannot work"):
        _tiny_fit(tmp_path / "fp8", mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"window_stride\) must be in 1..max_history \(3\), got 0"):
        SequenceWindows([np.arange(1, 6)], 3, 0)


# --- model APIs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_lcrec(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lcrec")
    interactions, _ = load_dataset(recbole(folder / "toy"))
    codes = np.stack(np.unravel_index(np.arange(interactions.num_items), (4, 4)), axis=1)
    torch.manual_seed(0)
    model = LCRec(pretrained_path=tiny_llama, num_beams=4)
    model.attach(SemanticIDs.from_codes(codes, [4, 4], interactions))
    model.save_pretrained(folder / "model")
    return model.eval(), folder / "model", interactions


def test_lcrec_refuses_semantic_ids_that_lack_an_item_or_differ(saved_lcrec, tmp_path):
    model, folder, _ = saved_lcrec
    payload = json.loads((folder / "semantic_ids.json").read_text())
    for name, edit in (("missing", lambda items: items.pop(next(iter(items)))),
                       ("swapped", lambda items: items.update(zip(list(items)[:2], list(items.values())[1::-1])))):
        broken = tmp_path / name
        broken.mkdir()
        for path in folder.iterdir():
            (broken / path.name).symlink_to(path)
        items = dict(payload["items"])
        edit(items)
        (broken / "semantic_ids.json").unlink()
        (broken / "semantic_ids.json").write_text(json.dumps({**payload, "items": items}))
        with pytest.raises(SemanticIDsError, match=r"semantic_ids.json has 1[12] items .* an item is missing or its "
                                                   r"codes differ"):
            LCRec.from_pretrained(broken)


def test_lcrec_refuses_damaged_llm_files(saved_lcrec, tmp_path):
    _, folder, _ = saved_lcrec
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folder.iterdir():
        (broken / path.name).symlink_to(path) if path.name != "llm" else (broken / "llm").mkdir()
    for path in (folder / "llm").iterdir():
        (broken / "llm" / path.name).write_bytes(path.read_bytes())
    weights = broken / "llm" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors does not match the sha256 recorded .* save the model again"):
        LCRec.from_pretrained(broken)
    settings = broken / "lcrec.json"
    settings.unlink()
    settings.write_text((folder / "lcrec.json").read_text().replace('"num_beams": 4', '"num_beams": 5'))
    with pytest.raises(ValueError, match=r"lcrec.json is corrupt \(its sha256 does not match its content\)"):
        LCRec.from_pretrained(broken)


def test_recommend_refuses_no_histories_and_k_beyond_the_catalogue(saved_lcrec, tiny_llama):
    model, _, interactions = saved_lcrec
    history = [interactions.item_ids[1], interactions.item_ids[2]]
    with pytest.raises(ValueError, match=r"k must be in 1\.\.12 \(the number of items\), got 13"):
        model.recommend([history], k=13)
    assert len(model.recommend([history], k=12)[0]) == 12
    torch.manual_seed(0)
    cllm = CLLM4Rec(num_users=2, num_items=12, pretrained_path=tiny_llama, d_rec=8, max_history=4)
    cllm.set_ids(["u0", "u1"], list(interactions.item_ids))
    with pytest.raises(ValueError, match=r"k must be in 1\.\.12 \(the number of items\), got 13"):
        cllm.recommend([history], k=13)
    popular = MostPopular([np.array([1, 2]), np.array([2, 3])], num_items=12)
    popular.set_item_ids(interactions.item_ids)
    for recommender in (model, cllm, popular):
        with pytest.raises(ValueError, match="got no histories"):
            recommender.recommend([])


def test_missing_or_incomplete_model_folders_are_named(tmp_path, tiny_llama):
    with pytest.raises(assets.AssetError, match=r"model folder \./no-such-llm does not exist"):
        pretrained.load_causal_lm("./no-such-llm")
    folder = tmp_path / "llm"
    folder.mkdir()
    for file in Path(tiny_llama).iterdir():
        if not file.name.endswith(".safetensors"):
            (folder / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ValueError, match=rf"the model folder {folder} has no weights"):
        pretrained.load_causal_lm(str(folder))
    for file in folder.glob("tokenizer*"):
        file.unlink()
    with pytest.raises(ValueError, match=rf"the model folder {folder} has no tokenizer"):
        pretrained.load_tokenizer(str(folder))
