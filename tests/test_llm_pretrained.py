"""The bundled LLM's conversion: special tokens as the GGUF says, a cache keyed by its producer."""

import json

import pytest

from genrec import assets
from genrec.llm import pretrained
from genrec.llm.pretrained import BUNDLED_LLM, conversion_folder, conversion_producer, convert_gguf, load_tokenizer

ASSET = assets.ASSETS["smollm2-135m-instruct"]


def test_bundled_special_tokens_are_the_gguf_ones():
    # The GGUF metadata: bos 1 <|im_start|>, eos = pad = 2 <|im_end|>, unk 0 <|endoftext|>.
    special = pretrained.gguf_special_tokens(assets.fetch(ASSET) / ASSET.files[0])
    assert special["eos_token"] == (2, "<|im_end|>") and special["pad_token"] == (2, "<|im_end|>")
    assert special["bos_token"] == (1, "<|im_start|>")
    tokenizer = load_tokenizer(BUNDLED_LLM)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
    assert tokenizer.bos_token_id == 1
    folder = convert_gguf(ASSET)
    config = json.loads((folder / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    assert json.loads((folder / assets.MARKER).read_text()) == conversion_producer(ASSET)


def _fake_conversion(monkeypatch, tmp_path):
    """convert_gguf under ``tmp_path`` with the fetch and the (slow) conversion replaced; returns the calls."""
    calls = []
    monkeypatch.setattr(assets, "fetch", lambda asset, root=None: tmp_path / "raw")

    def convert(source, gguf, out, name):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        calls.append(out)

    monkeypatch.setattr(pretrained, "_convert", convert)
    return calls


def test_conversion_by_another_producer_is_not_reused(monkeypatch, tmp_path):
    calls = _fake_conversion(monkeypatch, tmp_path)
    folder = conversion_folder(ASSET, tmp_path)
    folder.mkdir(parents=True)
    other = {**conversion_producer(ASSET), "transformers": "5.17.0"}
    (folder / assets.MARKER).write_text(json.dumps(other))
    assert convert_gguf(ASSET, tmp_path) == folder and len(calls) == 1
    assert json.loads((folder / assets.MARKER).read_text()) == conversion_producer(ASSET)
    assert convert_gguf(ASSET, tmp_path) == folder and len(calls) == 1  # now it is this producer's: reused


def test_old_format_marker_is_not_reused(monkeypatch, tmp_path):
    calls = _fake_conversion(monkeypatch, tmp_path)
    folder = conversion_folder(ASSET, tmp_path)
    folder.mkdir(parents=True)
    (folder / assets.MARKER).write_text(ASSET.sha256 + "\n")  # the marker format 1 wrote
    convert_gguf(ASSET, tmp_path)
    assert len(calls) == 1


def test_folder_depends_on_transformers_version(monkeypatch, tmp_path):
    import transformers

    here = conversion_folder(ASSET, tmp_path)
    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    there = conversion_folder(ASSET, tmp_path)
    assert here != there and here.parent == there.parent
    assert here.name.startswith(f"{ASSET.name}-{ASSET.sha256[:12]}-")


def test_gguf_token_mismatch_is_an_error(monkeypatch, tmp_path):
    # A converted tokenizer whose vocabulary disagrees with the GGUF's special-token ids is refused.
    class Tokenizer:
        def convert_tokens_to_ids(self, text):
            return 7

    monkeypatch.setattr(pretrained, "gguf_special_tokens", lambda path: {"eos_token": (2, "<|im_end|>")})
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: object())
    with pytest.raises(assets.AssetError, match="eos_token"):
        pretrained._convert(tmp_path, "x.gguf", tmp_path / "out", "smollm2-135m-instruct")
