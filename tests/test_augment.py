"""genrec.augment with a tiny random Llama (real SmolLM2 tokenizer): records, resume, torn lines, cache keys."""

import fcntl
import json

import pytest
import torch

from genrec import assets
from genrec.augment import (
    PROMPT,
    AugmentError,
    cache_path,
    clean_generation,
    generate_descriptions,
    load_descriptions,
    main,
    with_descriptions,
)
from genrec.data import ItemCatalog
from genrec.llm import load_causal_lm, tiny_causal_lm

CATALOG = ItemCatalog(
    ["[PAD]", "a", "b", "c", "d", "e"],
    {"title": ["", "Alpha", "Beta Gamma Delta", "Gamma", "Delta Epsilon", "Epsilon"],
     "genres": ["", "Drama", "Comedy", "", "Horror, Drama", "Comedy"]},
)
MAX_NEW = 6


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random Llama that writes words.

    With tied embeddings and random weights, the hidden state stays close to the last input
    token's embedding, so greedy decoding repeats the prompt's last token, the newline after
    ``<|im_start|>assistant``. Zeroing that one embedding row makes it write (nonsense) words.
    """
    folder = tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))
    model, tokenizer = load_causal_lm(str(folder))
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("Ċ")] = 0.0
    return folder, model, tokenizer


def run(tiny, path, **kwargs):
    _, model, tokenizer = tiny
    kwargs = {"batch_size": 2, "max_new_tokens": MAX_NEW, "progress": False, **kwargs}
    return generate_descriptions(CATALOG, path, model, tokenizer, **kwargs)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_record_per_item(tiny, tmp_path):
    path = tmp_path / "cache" / "d.jsonl"
    stats = run(tiny, path)
    records = lines(path)
    assert sorted(record["item"] for record in records) == ["a", "b", "c", "d", "e"]
    assert all(set(record) == {"item", "text", "description", "finished"} for record in records)
    assert all(record["description"] and record["description"] == record["description"].strip() for record in records)
    assert {record["item"]: record["text"] for record in records}["a"] == "Alpha. Genres: Drama."
    assert (stats.requested, stats.cached, stats.generated) == (5, 0, 5)
    assert stats.unfinished + sum(record["finished"] for record in records) == 5
    again = run(tiny, path)  # everything cached: no model call, no new line
    assert (again.cached, again.generated) == (5, 0) and len(lines(path)) == 5


def test_resume_after_interruption_repeats_no_work_and_matches_an_uninterrupted_run(tiny, tmp_path):
    whole = tmp_path / "whole.jsonl"
    run(tiny, whole)
    interrupted = tmp_path / "interrupted.jsonl"
    seen = []

    def die_after_first_batch(records):
        seen.append(len(records))
        raise KeyboardInterrupt  # what Ctrl-C raises mid-run

    with pytest.raises(KeyboardInterrupt):
        run(tiny, interrupted, on_batch=die_after_first_batch)
    assert seen == [2] and len(lines(interrupted)) == 2  # the first batch is on disk
    stats = run(tiny, interrupted)
    assert (stats.cached, stats.generated) == (2, 3)
    records = lines(interrupted)
    assert len(records) == 5 and len({record["item"] for record in records}) == 5  # no duplicates
    by_item = {record["item"]: record for record in records}
    assert by_item == {record["item"]: record for record in lines(whole)}  # same batches -> same greedy outputs


def test_torn_last_line_is_ignored_then_cut_off(tiny, tmp_path):
    path = tmp_path / "d.jsonl"
    run(tiny, path, items=[1, 2])
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"item": "c", "text": "Gam')  # killed during a write
    assert set(load_descriptions(path)) == {"a", "b"}
    stats = run(tiny, path)
    assert (stats.cached, stats.generated) == (2, 3)
    data = path.read_bytes()
    assert data.startswith(complete) and data.endswith(b"\n") and len(lines(path)) == 5


def test_a_bad_line_inside_the_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"item": "a", "text": "Alpha.", "description": "x", "finished": true}\nnot json\n{}\n')
    with pytest.raises(AugmentError, match=r"d.jsonl: line 2 is not a description record"):
        load_descriptions(path)


def test_stale_records_are_regenerated_and_not_loaded(tiny, tmp_path):
    path = tmp_path / "d.jsonl"
    run(tiny, path, items=[1])
    changed = CATALOG.with_field("title", {"a": "Alpha Prime", "b": "Beta Gamma Delta", "c": "Gamma",
                                           "d": "Delta Epsilon", "e": "Epsilon"})
    assert with_descriptions(changed, path).fields["description"][1] == ""  # text differs: stale
    _, model, tokenizer = tiny
    stats = generate_descriptions(changed, path, model, tokenizer, items=[1], max_new_tokens=MAX_NEW, progress=False)
    assert stats.generated == 1 and load_descriptions(path)["a"]["text"] == "Alpha Prime. Genres: Drama."


def test_cache_key_follows_model_prompt_and_settings(tiny, tmp_path):
    folder, _, _ = tiny
    other = tiny_causal_lm(tmp_path / "other", seed=1)
    key = cache_path("ml-100k", str(folder), root=tmp_path)
    assert key == cache_path("ml-100k", str(folder), root=tmp_path)
    assert key.parent == tmp_path / "cache" / "augment" and key.name.startswith("ml-100k-")
    assert key.suffix == ".jsonl"
    assert cache_path("ml-100k", str(other), root=tmp_path) != key  # other weights
    assert cache_path("ml-100k", str(folder), prompt=PROMPT + " Be brief.", root=tmp_path) != key
    assert cache_path("ml-100k", str(folder), noun="film", root=tmp_path) != key
    assert cache_path("ml-100k", str(folder), max_new_tokens=32, root=tmp_path) != key
    assert cache_path("ml-1m", str(folder), root=tmp_path) != key
    assert cache_path("recbole:/x/y z", str(folder), root=tmp_path).name.startswith("recbole_x_y_z-")
    _, model_hash, prompt_hash = key.stem.rsplit("-", 2)
    assert cache_path("ml-100k", str(other), root=tmp_path).stem.endswith(prompt_hash)
    assert cache_path("ml-100k", str(folder), max_new_tokens=32, root=tmp_path).stem.split("-")[-2] == model_hash


def test_whitespace_generations_are_recorded_as_null_and_reported(tmp_path, tiny, capsys):
    folder, _, tokenizer = tiny
    model, _ = load_causal_lm(str(folder))  # unmodified: it writes only newlines (see the fixture)
    path = tmp_path / "d.jsonl"
    stats = generate_descriptions(CATALOG, path, model, tokenizer, max_new_tokens=3, progress=False)
    assert stats.empty == ["a", "b", "c", "d", "e"] and "5 empty" in stats.summary()
    assert all(record["description"] is None for record in lines(path))
    assert with_descriptions(CATALOG, path).fields["description"] == [""] * 6
    assert "5 of 5 items have no description" in capsys.readouterr().err
    with pytest.raises(AugmentError, match="5 of 5 items have no description"):
        with_descriptions(CATALOG, path, require_all=True)


def test_descriptions_become_a_text_field(tmp_path):
    path = tmp_path / "d.jsonl"
    records = [{"item": "a", "text": "Alpha. Genres: Drama.", "description": "A slow drama.", "finished": True},
               {"item": "b", "text": "Beta Gamma Delta. Genres: Comedy.", "description": None, "finished": True}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    catalog = with_descriptions(CATALOG, path)
    assert list(catalog.fields) == ["title", "genres", "description"]
    assert catalog.text(1) == "Alpha. Genres: Drama. Description: A slow drama."
    assert catalog.text(2) == "Beta Gamma Delta. Genres: Comedy."  # empty generation: no field text
    assert CATALOG.text(1) == "Alpha. Genres: Drama."  # the original is unchanged


def test_with_field_replaces_in_place_and_rejects_unknown_ids():
    replaced = CATALOG.with_field("title", {"a": "A"})
    assert list(replaced.fields) == ["title", "genres"] and replaced.fields["title"] == ["", "A", "", "", "", ""]
    with pytest.raises(ValueError, match="1 ids that are not catalogue items"):
        CATALOG.with_field("description", {"zzz": "x"})


def test_clean_generation():
    assert clean_generation("  Movie:  A fun\n film. It drags", finished=False, noun="movie") == "A fun film."
    assert clean_generation("A fun film. It drags", finished=True, noun="movie") == "A fun film. It drags"
    assert clean_generation("no sentence end", finished=False, noun="movie") == "no sentence end"
    assert clean_generation(" \n ", finished=True, noun="item") == ""


def test_a_second_writer_is_refused(tiny, tmp_path):
    path = tmp_path / "d.jsonl"
    with open(tmp_path / "d.jsonl.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AugmentError, match="another process is writing"):
            run(tiny, path)


def test_command_line_on_ml100k(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    real = assets.fetch("ml-100k")  # already cached: no network
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "ml-100k").symlink_to(real)
    argv = ["--dataset", "ml-100k", "--model", str(folder), "--limit", "3", "--batch-size", "2",
            "--max-new-tokens", "4", "--root", str(tmp_path), "--no-progress"]
    stats = main(argv)
    assert (stats.requested, stats.generated) == (3, 3)
    assert stats.path == cache_path("ml-100k", str(folder), max_new_tokens=4, root=tmp_path)
    assert sorted(record["item"] for record in lines(stats.path)) == ["242", "302", "377"]  # items 1..3
    out = capsys.readouterr().out
    assert "3 items: 0 cached, 3 generated" in out and "Kolya (1996). Genres: Comedy. ->" in out
    assert main(argv).cached == 3
