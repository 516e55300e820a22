"""The README's Python snippets run verbatim.

Every ```python block of README.md runs, in file order and each in a fresh namespace, in a
temporary working directory that holds what the snippets name:

- the model folders the README's commands leave (``runs/<model>/<config>/model``), written here by
  ``save_pretrained`` of tiny, randomly initialised models on the real ml-100k items and users
  (SASRec, TIGER, a content model, and LC-Rec and CLLM4Rec on a 2-layer Llama with SmolLM2's real
  tokenizer): training them with the real configs would take minutes to hours, while loading and
  serving, which is what the snippets show, is the same code for a tiny model;
- ``mydata/`` of "Bring your own data", written from the README's own tab-separated blocks;
- ``MINDsmall_dev/``, the MIND fixture rows of ``tests/test_content_mind.py`` (MIND cannot be
  downloaded offline), and ``my_model``, the scorer that the MIND snippet leaves to the reader.

A block right after ``<!-- readme-test: skip REASON -->`` is skipped; :data:`ALLOWED_SKIPS` lists
the reasons accepted, so no snippet is skipped silently.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.config import parse_gin
from genrec.data import load_dataset
from genrec.llm.pretrained import tiny_causal_lm
from genrec.models import CLLM4Rec, LCRec, SASRec, TIGER
from genrec.models.content import ContentRecommender
from genrec.semantic_ids import SemanticIDs
from test_content_mind import BEHAVIORS, NEWS  # tests/test_content_mind.py

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BLOCK = re.compile(r"(<!-- readme-test: skip (?P<reason>[^>]*?) -->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
ALLOWED_SKIPS: dict[str, str] = {}  # reason -> why the test cannot run it; empty: every snippet runs


def blocks(language: str) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason or None) of every README block in ``language``."""
    text = README.read_text(encoding="utf-8")
    return [(text[:m.start("body")].count("\n") + 1, m["body"], m["reason"])
            for m in BLOCK.finditer(text) if m["lang"] == language]


SNIPPETS = blocks("python")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory with every folder and file the snippets name (see the module docstring)."""
    root = tmp_path_factory.mktemp("readme")
    interactions, catalog = load_dataset("ml-100k")
    num_items, item_ids, user_ids = interactions.num_items, interactions.item_ids, interactions.user_ids
    torch.manual_seed(0)

    sasrec = SASRec(num_items=num_items, hidden_size=8, num_layers=1, num_heads=1, inner_size=16)
    sasrec.set_item_ids(item_ids)
    sasrec.save_pretrained(root / "runs/sasrec/ml100k_debug/model")

    codes = np.stack(np.unravel_index(np.arange(num_items), (16, 16, 8)), axis=1)  # unique code tuples
    ids = SemanticIDs.from_codes(codes, [16, 16, 8], interactions)
    tiger = TIGER(ids, num_layers=1, num_decoder_layers=1, d_model=16, num_heads=2, d_kv=8, d_ff=32)
    tiger.set_user_ids(user_ids)
    for run in ("runs/tiger/ml100k_debug/model", "runs/tiger/ml100k/model"):  # the TIGER section's run too
        tiger.save_pretrained(root / run)

    llm = str(tiny_causal_lm(root / "tiny_llama", "llama"))
    lcrec = LCRec(pretrained_path=llm)
    lcrec.attach(ids)
    lcrec.save_pretrained(root / "runs/lcrec/ml100k/lcrec_debug/model")

    cllm4rec = CLLM4Rec(num_users=interactions.num_users, num_items=num_items, pretrained_path=llm, d_rec=16,
                        max_history=8)
    cllm4rec.set_ids(user_ids, item_ids)
    cllm4rec.set_histories(interactions.sequences)
    cllm4rec.save_pretrained(root / "runs/cllm4rec/ml100k_debug/model")

    parse_gin([], ["ContentRecommender.item_encoder = 'cnn'", "ContentRecommender.user_encoder = 'mean'",
                   "ContentRecommender.dim = 16"])
    content = ContentRecommender(catalog.texts())
    content.set_item_ids(item_ids)
    content.save_pretrained(root / "runs/content/ml100k/nrms_debug/model")

    inter, item = [code for _, code, _ in blocks("") if "\t" in code][:2]  # "Bring your own data"
    (root / "mydata").mkdir()
    (root / "mydata/mydata.inter").write_text(inter, encoding="utf-8")
    (root / "mydata/mydata.item").write_text(item, encoding="utf-8")
    (root / "MINDsmall_dev").mkdir()
    (root / "MINDsmall_dev/news.tsv").write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    (root / "MINDsmall_dev/behaviors.tsv").write_text("\n".join(BEHAVIORS) + "\n", encoding="utf-8")
    return root


def my_model(history, candidates):
    """The MIND snippet's placeholder scorer: one score per candidate."""
    return [float(len(history) % 3 + i) for i, _ in enumerate(candidates)]


def test_the_readme_has_python_snippets_and_no_unexplained_skips():
    assert len(SNIPPETS) >= 8
    unexplained = {reason for _, _, reason in SNIPPETS if reason is not None} - set(ALLOWED_SKIPS)
    assert not unexplained, f"README skips snippets for reasons this test does not list: {unexplained}"


@pytest.mark.parametrize("line, code, skip", SNIPPETS, ids=[f"README.md:{line}" for line, _, _ in SNIPPETS])
def test_snippet_runs(line, code, skip, workdir, monkeypatch, capsys):
    if skip is not None:
        pytest.skip(f"README.md:{line}: {skip} ({ALLOWED_SKIPS[skip]})")
    monkeypatch.chdir(workdir)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme", "my_model": my_model})
    printed = capsys.readouterr().out
    if "print(" in code:
        assert printed.strip(), f"README.md:{line} printed nothing"


def test_recommendations_printed_by_the_serving_snippets_are_catalogue_items(workdir, monkeypatch, capsys):
    """The serving snippets print k (raw item id, score) pairs per user, every id a catalogue item."""
    interactions, _ = load_dataset("ml-100k")
    catalogue = set(interactions.item_ids[1:])
    monkeypatch.chdir(workdir)
    served = [(line, code) for line, code, skip in SNIPPETS if ".recommend(" in code and skip is None]
    assert len(served) >= 6
    checked = 0
    for line, code in served:
        printed = []  # a snippet that shows the call without printing it adds nothing
        exec(compile(code, f"README.md:{line}", "exec"), {"print": printed.append, "my_model": my_model})
        for result in printed:
            assert result and all(len(row) == 10 and {item for item, _ in row} <= catalogue for row in result), line
            checked += 1
    assert checked >= 7  # SASRec, LC-Rec, TIGER, CLLM4Rec twice, content, most popular
    capsys.readouterr()


@pytest.mark.parametrize("line, code, skip", blocks("gin"), ids=[f"README.md:{line}" for line, _, _ in blocks("gin")])
def test_gin_examples_parse_from_another_directory(line, code, skip, workdir, monkeypatch):
    """A config the README suggests writing parses (its include found from any directory), and the
    SASRec trainer's data step accepts it."""
    import gin

    import genrec.trainers.sasrec_trainer  # noqa: F401  (registers train_sasrec, which the config binds)
    from genrec.training import experiment

    monkeypatch.chdir(workdir)
    (workdir / "example.gin").write_text(code, encoding="utf-8")
    parse_gin(["example.gin"], ["experiment.k_core = None", "experiment.min_rating = None"])  # 6 rows of mydata
    assert gin.query_parameter("experiment.dataset") == "recbole:mydata"
    assert experiment().interactions.num_users == 2


def test_the_mydata_example_loads_as_the_readme_says(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    interactions, catalog = load_dataset("recbole:mydata")
    assert (interactions.num_users, interactions.num_items) == (2, 3)
    assert catalog.text(1) == "Toy Story (1995). Genres: Animation Comedy."
    assert "# 2 3 Toy Story (1995). Genres: Animation Comedy." in README.read_text(encoding="utf-8")

