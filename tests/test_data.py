"""genrec.data: readers, ordering, filtering, splits, catalogue text, errors; one real ml-100k run."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genrec.assets import ASSETS, MARKER
from genrec.data import SPLITS, DatasetFileError, Interactions, ItemCatalog, load_dataset
from genrec.data.catalog import clean_text, restore_article

REPO = Path(__file__).resolve().parent.parent
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def write_recbole(folder: Path, inter_rows: list[str], item_rows: list[str] | None = None) -> str:
    """Write ``<folder>/<folder name>.inter`` (and ``.item``); return the ``recbole:`` dataset name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.inter").write_text("\n".join([INTER_HEADER, *inter_rows]) + "\n")
    if item_rows is not None:
        header = "item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq"
        (folder / f"{folder.name}.item").write_text("\n".join([header, *item_rows]) + "\n")
    return f"recbole:{folder}"


def seqs(interactions: Interactions) -> list[list[str]]:
    """Sequences as raw item ids."""
    return [[interactions.item_ids[i] for i in sequence] for sequence in interactions.sequences]


# user u1 has a tie at t=10 (a before b in the file); u3 has a single interaction
TOY = ["u1\ta\t5\t10", "u1\tb\t4\t10", "u1\tc\t3\t5", "u2\tb\t2\t1", "u2\td\t5\t3", "u2\ta\t4\t2", "u3\tc\t1\t7"]
TOY_ITEMS = ["a\tAlpha, The\t1999\tDrama Comedy", "b\tBeta\t2001\t", "c\t\t\t", "zzz\tUnused\t1990\tDrama"]


@pytest.fixture
def toy(tmp_path):
    return write_recbole(tmp_path / "toy", TOY, TOY_ITEMS)


def test_stable_time_order_and_first_appearance_indices(toy, tmp_path):
    interactions, _ = load_dataset(toy)
    assert interactions.item_ids == ["[PAD]", "a", "b", "c", "d"]
    assert interactions.user_ids == ["u1", "u2", "u3"]
    assert seqs(interactions) == [["c", "a", "b"], ["b", "a", "d"], ["c"]]
    assert [t.tolist() for t in interactions.timestamps] == [[5, 10, 10], [1, 2, 3], [7]]
    assert (interactions.num_users, interactions.num_items, interactions.num_interactions) == (3, 4, 7)
    swapped = [TOY[1], TOY[0], *TOY[2:]]  # same data, tie in the other file order
    reordered, _ = load_dataset(write_recbole(tmp_path / "swapped", swapped))
    assert seqs(reordered)[0] == ["c", "b", "a"]


def test_interactions_are_read_only(toy):
    interactions, _ = load_dataset(toy)
    with pytest.raises(ValueError):
        interactions.sequences[0][0] = 2
    with pytest.raises(AttributeError):
        interactions.name = "other"


def test_catalog_aligned_cleaned_and_never_empty(toy):
    interactions, catalog = load_dataset(toy)
    assert catalog.item_ids == interactions.item_ids  # the unused item zzz is dropped
    assert catalog.fields["genres"] == ["", "Drama Comedy", "", "", ""]
    assert catalog.texts() == ["Alpha, The (1999). Genres: Drama Comedy.", "Beta (2001).", "c", "d"]
    with pytest.raises(IndexError, match="padding"):
        catalog.text(0)


def test_loo_split_and_short_user_error(toy, tmp_path):
    with pytest.raises(ValueError, match=r"user 'u3' .* has 1 interaction\(s\) .* use k_core=3 or drop such users"):
        load_dataset(toy)[0].split("loo")
    rows = [f"u{u}\ti{i}\t1\t{i}" for u in range(2) for i in range(u + 4)]  # lengths 4 and 5
    interactions, _ = load_dataset(write_recbole(tmp_path / "long", rows))
    split = interactions.split(max_history=2)
    assert split.name == "loo"
    assert [t.tolist() for t in split.train] == [[1, 2], [1, 2, 3]]
    assert split.valid.users.tolist() == [0, 1] and split.valid.targets.tolist() == [3, 4]
    assert [h.tolist() for h in split.valid.histories] == [[1, 2], [2, 3]]
    assert split.test.targets.tolist() == [4, 5]
    assert [h.tolist() for h in split.test.histories] == [[2, 3], [3, 4]]
    full = interactions.split("loo").test.histories
    assert [h.tolist() for h in full] == [[1, 2, 3], [1, 2, 3, 4]]


def test_ratio_split_rounding_and_rows(tmp_path):
    rows = [f"u{n}\ti{i}\t1\t{i}" for n in (3, 10, 25) for i in range(n)]
    split = load_dataset(write_recbole(tmp_path / "ratio", rows))[0].split("ratio")
    assert [len(t) for t in split.train] == [1, 8, 21]  # h = max(1, floor(0.1 n)) each for valid and test
    assert split.valid.users.tolist() == [0, 1, 2, 2] and split.test.users.tolist() == [0, 1, 2, 2]
    assert split.test.targets.tolist() == [3, 10, 24, 25]
    assert [len(h) for h in split.test.histories] == [2, 9, 23, 24]  # everything before the target
    assert split.valid.targets.tolist() == [2, 9, 22, 23]


def test_unknown_split_lists_known(toy):
    with pytest.raises(ValueError, match="unknown split 'random'; known splits: loo, ratio"):
        load_dataset(toy)[0].split("random")
    assert set(SPLITS) == {"loo", "ratio"}


def test_min_rating(toy):
    interactions, catalog = load_dataset(toy, min_rating=4)
    assert interactions.user_ids == ["u1", "u2"]
    assert interactions.item_ids == ["[PAD]", "a", "b", "d"]  # re-indexed after filtering
    assert seqs(interactions) == [["a", "b"], ["a", "d"]]
    assert catalog.item_ids == interactions.item_ids


def test_k_core_iterates_until_stable(tmp_path):
    # 2-core: item z (1 row) goes, then u3 has 1 row left and goes, leaving x with 2 rows
    rows = ["u1\tx\t1\t1", "u1\ty\t1\t2", "u2\tx\t1\t3", "u2\ty\t1\t4", "u3\tx\t1\t5", "u3\tz\t1\t6"]
    interactions, _ = load_dataset(write_recbole(tmp_path / "core", rows), k_core=2)
    assert interactions.user_ids == ["u1", "u2"] and interactions.item_ids == ["[PAD]", "x", "y"]
    assert interactions.num_interactions == 4
    with pytest.raises(ValueError, match="no interactions left"):
        load_dataset(write_recbole(tmp_path / "core", rows), k_core=3)


def test_id_lookups_and_fingerprint(toy, tmp_path):
    interactions, _ = load_dataset(toy)
    assert interactions.item_index("d") == 4 and interactions.user_index("u2") == 1
    with pytest.raises(KeyError, match="unknown item id 'x' in dataset toy; known ids look like 'a', 'b', 'c'"):
        interactions.item_index("x")
    with pytest.raises(KeyError, match="unknown user id"):
        interactions.user_index("u9")
    with pytest.raises(KeyError):
        interactions.item_index("[PAD]")
    again, _ = load_dataset(toy)
    assert again.fingerprint() == interactions.fingerprint() and len(interactions.fingerprint()) == 16
    assert load_dataset(toy, min_rating=2)[0].fingerprint() != interactions.fingerprint()


def write_gzip_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture
def amazon(tmp_path):
    folder = tmp_path / "raw" / "amazon"
    folder.mkdir(parents=True)
    reviews = [("A1", "B01", 5.0, 300), ("A1", "B02", 3.0, 100), ("A2", "B02", 4.0, 50), ("A1", "B03", 4.0, 200)]
    write_gzip_lines(folder / "reviews_Toy_5.json.gz", [json.dumps(
        {"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t, "reviewText": "ok"}) for u, a, r, t in reviews])
    description = "Soft &amp; <b>gentle</b>\n\n formula. " + " ".join(["word"] * 120)
    meta = [
        repr({"asin": "B02", "title": "Lip Balm", "brand": "Acme", "description": description,
              "categories": [["Beauty", "Skin Care", "Lips"], ["Beauty", "Makeup"]]}),
        repr({"asin": "B01", "categories": [["Beauty"]], "salesRank": {"Beauty": 12}}),
        "{'asin': 'B99', 'title': this line is never parsed: the item has no reviews}",
    ]  # B03 has no metadata
    write_gzip_lines(folder / "meta_Toy.json.gz", meta)
    return folder


def test_amazon_reader(amazon, tmp_path):
    interactions, catalog = load_dataset(f"amazon:{amazon}")
    assert interactions.name == "amazon-Toy"
    assert interactions.user_ids == ["A1", "A2"] and interactions.item_ids == ["[PAD]", "B01", "B02", "B03"]
    assert seqs(interactions) == [["B02", "B03", "B01"], ["B02"]]
    text = catalog.text(2)
    assert text.startswith("Lip Balm. Brand: Acme. Categories: Beauty, Skin Care, Lips, Makeup. "
                           "Description: Soft & gentle formula. word")
    assert text.endswith("word word ...") and len(catalog.fields["description"][2].split()) == 101
    assert catalog.texts()[0] == "Categories: Beauty." and catalog.text(3) == "B03"
    by_category, _ = load_dataset("amazon:Toy", root=tmp_path, min_rating=4)
    assert seqs(by_category) == [["B03", "B01"], ["B02"]]


def test_amazon_missing_and_corrupt_files(amazon, tmp_path):
    with pytest.raises(DatasetFileError, match="reviews_Games_5.json.gz: file not found; download https://snap"):
        load_dataset("amazon:Games", root=tmp_path)
    (amazon / "meta_Toy.json.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DatasetFileError, match=r"meta_Toy.json.gz: unreadable or corrupt .*download it again"):
        load_dataset(f"amazon:{amazon}")
    write_gzip_lines(amazon / "meta_Toy.json.gz", ["{'asin': 'B01', 'title': __import__('os').getcwd()}"])
    with pytest.raises(DatasetFileError, match="line 1 is not a Python dict literal"):
        load_dataset(f"amazon:{amazon}")
    with pytest.raises(DatasetFileError, match="folder not found"):
        load_dataset(f"amazon:{tmp_path / 'nowhere'}")


def test_recai_reader(tmp_path):
    folder = tmp_path / "steam"
    folder.mkdir()
    meta = [{"app_name": "Portal"}, {"title": "Doom"}, {"TitleName": "Halo"}, {"GameName": "Myst"}, {"id": 5}]
    (folder / "metadata.json").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    (folder / "sequential_data.txt").write_text("7 1 3 2\n8 4 5 1\n")
    interactions, catalog = load_dataset(f"recai:{folder}")
    assert interactions.name == "recai-steam"
    assert interactions.user_ids == ["7", "8"] and interactions.item_ids == ["[PAD]", "1", "3", "2", "4", "5"]
    assert [t.tolist() for t in interactions.timestamps] == [[0, 1, 2], [0, 1, 2]]
    assert catalog.texts() == ["Portal.", "Halo.", "Doom.", "Myst.", "5"]
    with pytest.raises(ValueError, match="has no ratings"):
        load_dataset(f"recai:{folder}", min_rating=3)
    (folder / "metadata.json").write_text('{"title": "Portal"}\nnot json\n')
    with pytest.raises(DatasetFileError, match="metadata.json: line 2 is not JSON"):
        load_dataset(f"recai:{folder}")
    with pytest.raises(DatasetFileError, match="sequential_data.txt: file not found"):
        load_dataset(f"recai:{tmp_path}")


def test_recbole_malformed_files(tmp_path):
    with pytest.raises(DatasetFileError, match=r"empty.inter: file not found"):
        load_dataset(f"recbole:{tmp_path / 'empty'}")
    bad_row = write_recbole(tmp_path / "bad", ["u1\ta\t5\t1", "u1\tb\t5"])
    with pytest.raises(DatasetFileError, match="line 3 has 3 tab-separated fields, the header has 4"):
        load_dataset(bad_row)
    bad_value = write_recbole(tmp_path / "value", ["u1\ta\t5\t1", "u1\tb\tfive\t2"])
    with pytest.raises(DatasetFileError, match="column 'rating' has the non-numeric value 'five' on line 3"):
        load_dataset(bad_value)
    (tmp_path / "bytes").mkdir()
    (tmp_path / "bytes" / "bytes.inter").write_bytes(INTER_HEADER.encode() + b"\nu1\t\xff\t1\t1\n")
    with pytest.raises(DatasetFileError, match="unreadable or corrupt"):
        load_dataset(f"recbole:{tmp_path / 'bytes'}")


def test_corrupt_fetched_dataset_says_how_to_refetch(tmp_path):
    folder = tmp_path / "raw" / "ml-100k"
    folder.mkdir(parents=True)
    for file in ASSETS["ml-100k"].files:
        (folder / file).write_text("user_id:token\titem_id:token\n1\n")
    (folder / MARKER).write_text(ASSETS["ml-100k"].sha256)
    with pytest.raises(DatasetFileError, match=f"line 2 .*; delete {folder} and re-run to fetch it again"):
        load_dataset("ml-100k", root=tmp_path)


def test_unknown_dataset_lists_names_and_schemes():
    message = r"unknown dataset 'ml-20m'; known datasets: ml-100k, ml-1m; .*'amazon:.*'recai:"
    with pytest.raises(ValueError, match=message):
        load_dataset("ml-20m")


@pytest.mark.parametrize("raw, restored", [
    ("Butcher Boy, The", "The Butcher Boy"),
    ("Good, The Bad and The Ugly, The", "The Good, The Bad and The Ugly"),
    ("Enfer, L'", "L'Enfer"),
    ("Thieves (Voleurs, Les)", "Thieves (Les Voleurs)"),
    ("Postino, Il (The Postman)", "Il Postino (The Postman)"),
    ("Paris, France", "Paris, France"),
])
def test_restore_article(raw, restored):
    assert restore_article(raw) == restored


def test_clean_text():
    assert clean_text("  a &amp; <br/>b\n\tc ") == "a & b c"
    assert clean_text("one two three", max_words=2) == "one two ..."


def test_catalog_validates_alignment():
    with pytest.raises(ValueError, match="padding"):
        ItemCatalog(["a"], {})
    with pytest.raises(ValueError, match="has 1 values for 2 item ids"):
        ItemCatalog(["[PAD]", "a"], {"title": [""]})


def test_real_ml_100k():
    interactions, catalog = load_dataset("ml-100k")
    assert (interactions.num_users, interactions.num_items, interactions.num_interactions) == (943, 1682, 100_000)
    last_two_tied = sum(len(t) >= 2 and t[-1] == t[-2] for t in interactions.timestamps)
    assert last_two_tied == 415
    split = interactions.split("loo")
    assert (sum(map(len, split.train)), len(split.valid), len(split.test)) == (98_114, 943, 943)
    assert all(np.all(np.diff(t) >= 0) for t in interactions.timestamps)

    def text(raw_id):
        return catalog.text(interactions.item_index(raw_id))

    assert text("1") == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert text("267") == "unknown. Genres: unknown."
    assert text("1412") == "Land Before Time III: The Time of the Great Giving (1995). Genres: Animation, Children's."
    assert text("1645") == "The Butcher Boy (1998). Genres: Drama."
    assert all(catalog.texts())

    result = subprocess.run([sys.executable, "-m", "genrec.data", "stats", "ml-100k"], capture_output=True,
                            text=True, cwd=REPO, check=True)
    assert "users            943" in result.stdout and "train 98,114 | valid 943 | test 943" in result.stdout
    assert interactions.fingerprint() in result.stdout  # identical across processes
