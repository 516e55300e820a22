"""Pretrained language model as a content operator, with its frozen lower layers cached on disk.

Legommenders' LM operators (PLM-NR, ONCE/DIRE, ``tune_from``) fine-tune only the top layers of a
pretrained LM and read the hidden states after the frozen layers from a cache. Here:

* ``path`` names any Hugging Face model ``AutoModel`` loads: ``bundled:all-minilm-l6-v2`` (the
  default, a 6-layer BERT sentence encoder), ``bundled:smollm2-135m-instruct`` (SmolLM2, Llama
  architecture, 30 layers; its base model without the LM head), a folder or a hub id. Encoders with
  ``encoder.layer`` (BERT family) and decoders with ``layers`` / ``h`` (Llama, Qwen2, Mistral, GPT-2)
  are supported.
* ``frozen_layers = k`` freezes the embeddings and layers ``0..k-1`` (negative: all but the top
  ``-k``); layers ``k..L-1`` train, through LoRA adapters (``lora = True``, the default) or fully.
* The item vector is the masked mean of the last hidden states over the item's tokens (as
  sentence-transformers pools MiniLM), projected to D by a trained linear layer.
* **Layer cache.** The frozen part's output for every item, float32 ``[N + 1, T, H]``, is computed
  once and stored at ``<data dir>/cache/lm_layers/<key>.npy``; the key hashes the model identity (a
  bundled model's pinned sha256; a folder's file names, sizes and mtimes; a hub id's name), ``k``,
  every item text and the token-id matrix, so a changed model, layer, text or tokenisation never
  reads a stale file (Legommenders' cache is keyed by data name, LM and layer only: its issue #20).
  A sidecar ``<key>.npy.json`` records the file's size and sha256 (:func:`genrec.io.save_checked_array`):
  a cache that no longer matches it, cannot be read or has another shape is rebuilt, with a message
  naming the file, never used.
  Training and evaluation then run only the top ``L - k`` layers: the cached states are fed into
  layer k by a forward pre-hook, so the model's own code (masks, rotary positions, final norm) runs
  unchanged. With ``layer_cache = False`` the frozen layers run on every call instead (the naive
  path that ``benchmarks/eval_cache.py`` measures against).

The frozen layers always run in eval mode (no dropout), so cached and recomputed states agree.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import gin
import numpy as np
import torch
from torch import nn

from genrec import assets
from genrec.io import file_lock, load_checked_array, save_checked_array
from genrec.llm.lora import apply_lora
from genrec.llm.pretrained import resolve_llm
from genrec.models.content.content_ops import ContentOperator
from genrec.models.content.layers import masked_mean
from genrec.models.content.text import load_text_tokenizer, tokenize_items
from genrec.progress import progress

__all__ = ["PretrainedLMContent", "layer_cache_key"]

CONTENT_LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}
"""LoRA settings of the content LM by default (those of the Legommenders-style presets)."""

_LAYER_LISTS = ("encoder.layer", "layers", "h", "model.layers", "transformer.h", "decoder.layers")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")


class _Captured(Exception):
    """Stops a forward pass once the frozen layers' output has been captured."""


def layer_cache_key(model: str, layer: int, texts: list[str], token_ids: torch.Tensor, mask: torch.Tensor) -> str:
    """24 hex digits identifying (model files, frozen layer count, texts, token ids)."""
    digest = hashlib.sha256(json.dumps({**assets.model_identity(model), "layer": layer, "dtype": "float32",
                                        "shape": list(token_ids.shape)}, sort_keys=True).encode())
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    digest.update(token_ids.numpy().astype(np.int64).tobytes())
    digest.update(mask.numpy().astype(np.uint8).tobytes())
    return digest.hexdigest()[:24]


def _find_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    for dotted in _LAYER_LISTS:
        *parents, attr = dotted.split(".")
        parent = model
        for name in parents:
            parent = getattr(parent, name, None)
        layers = getattr(parent, attr, None) if parent is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers):
            return parent, attr, layers
    raise ValueError(f"PretrainedLMContent cannot find the transformer layers of {type(model).__name__}; "
                     f"supported layouts: {', '.join(_LAYER_LISTS)} (BERT, Llama, Qwen2, Mistral, GPT-2 families)")


@gin.configurable(denylist=["texts", "dim"])
class PretrainedLMContent(ContentOperator):
    """A pretrained LM encodes item text; the top layers train (LoRA or full), the rest is cached.

    Args:
        texts: N item texts.
        dim: D, the output width (a trained projection of the LM's hidden size).
        path: ``bundled:<name>``, a folder or a hub id (see the module docstring).
        frozen_layers: k, bottom layers frozen and cached; negative: all but the top ``-k``.
        lora: LoRA settings for adapters on the top layers (:func:`genrec.llm.lora.lora_settings`,
            the one place every LLM model takes them from; default :data:`CONTENT_LORA`: r 8,
            alpha 16, no dropout, peft's default modules for the architecture, e.g. BERT's query and
            value); ``None``: train those layers fully. In gin:
            ``PretrainedLMContent.lora = @content/lora_settings()`` with ``content/lora_settings.r = 32``.
        max_tokens: tokens kept per text (the tokenizer's special tokens included).
        layer_cache: read the frozen layers' output from the disk cache (built on first use).
        cache_dir: folder of the cache files (default ``<data dir>/cache/lm_layers``).
        cache_batch_size: items per forward pass when the cache is built.
    """

    def __init__(self, texts: list[str], dim: int, path: str = "bundled:all-minilm-l6-v2", frozen_layers: int = -1,
                 lora: dict | None = CONTENT_LORA, max_tokens: int = 32, layer_cache: bool = True,
                 cache_dir: str | None = None, cache_batch_size: int = 64):
        super().__init__(dim)
        from transformers import AutoModel

        self.path, self.texts = path, list(texts)
        tokenizer = load_text_tokenizer(path)
        ids, mask = tokenize_items(self.texts, tokenizer, max_tokens, add_special_tokens=True)
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("token_mask", mask, persistent=False)
        try:
            backbone = AutoModel.from_pretrained(resolve_llm(path), dtype=torch.float32)
        except OSError as err:
            raise OSError(f"could not load the language model {path!r} ({err}); use 'bundled:all-minilm-l6-v2', "
                          "'bundled:smollm2-135m-instruct', a local folder, or a hub id with network access") from err
        parent, attr, layers = _find_layers(backbone)
        total = len(layers)
        k = frozen_layers if frozen_layers >= 0 else total + frozen_layers
        if not 0 <= k < total:
            raise ValueError(f"PretrainedLMContent.frozen_layers = {frozen_layers} leaves no layer to train in "
                             f"{path!r}, which has {total} layers; use 0..{total - 1} or -{total}..-1")
        self.frozen_layers, self.num_layers = k, total
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.lower = nn.ModuleList(layers[:k])  # frozen; run only to build the cache or with layer_cache off
        upper = nn.ModuleList(layers[k:])
        setattr(parent, attr, upper)
        # A tuple, so that nn.Module does not register the backbone's layers a second time.
        self._layout = (parent, attr, upper)
        self._mode: str | None = None
        self._states: torch.Tensor | None = None
        upper[0].register_forward_pre_hook(self._hook, with_kwargs=True)
        if lora:
            try:
                backbone = apply_lora(backbone, dict(lora))
            except ValueError as err:
                raise ValueError(f"LoRA for {path!r} failed ({err}); set the target_modules of the LoRA settings "
                                 "to the names of its linear layers, or PretrainedLMContent.lora = None") from err
        else:
            for p in upper.parameters():
                p.requires_grad_(True)
            for name in _FINAL_NORMS:
                norm = getattr(parent, name, None)
                if isinstance(norm, nn.Module):
                    for p in norm.parameters():
                        p.requires_grad_(True)
        self.backbone = backbone
        self.hidden_size = backbone.config.hidden_size
        self.proj = nn.Linear(self.hidden_size, dim)
        self.layer_cache = layer_cache
        self.cache_path: Path | None = None
        self._cached: np.ndarray | None = None
        if layer_cache:
            folder = Path(cache_dir) if cache_dir else assets.data_dir() / "cache" / "lm_layers"
            key = layer_cache_key(path, k, self.texts, ids, mask)
            self.cache_path = folder / f"{key}.npy"
            self._cached = self._load_or_build_cache(self.cache_path, cache_batch_size)

    # -------------------------------------------------------------- frozen part

    def _hook(self, module, args, kwargs):
        if self._mode == "capture":
            self._states = args[0] if args else kwargs["hidden_states"]
            raise _Captured
        if self._mode == "inject":
            if args:
                return (self._states, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self._states}
        return None

    def train(self, mode: bool = True):
        super().train(mode)
        self.lower.eval()  # frozen layers never use dropout: cached and recomputed states agree
        return self

    def lower_states(self, items: torch.Tensor) -> torch.Tensor:
        """The frozen layers' output [n, t, H] for ``items`` [n], computed now (no cache)."""
        ids, mask = self.tokens(items)
        parent, attr, upper = self._layout
        setattr(parent, attr, nn.ModuleList([*self.lower, upper[0]]))
        training = self.backbone.training
        self.backbone.eval()
        self._mode = "capture"
        try:
            with torch.no_grad():
                self.backbone(input_ids=ids, attention_mask=mask.long())
        except _Captured:
            states = self._states
        else:
            raise RuntimeError("the frozen layers' output was not captured")
        finally:
            self._mode, self._states = None, None
            setattr(parent, attr, upper)
            self.backbone.train(training)
        return states.detach().float()

    def _load_or_build_cache(self, path: Path, batch_size: int) -> np.ndarray:
        """The cache as a read-only memmap; built when missing, and rebuilt (with a message naming the file)
        when it does not match its recorded size and sha256, cannot be read, or has another shape."""
        shape = (*self.token_ids.shape, self.hidden_size)
        cached, problem = load_checked_array(path, shape, mmap=True)
        if cached is not None:
            return cached
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(f".{path.name}.lock")):  # one builder among processes
            cached, problem = load_checked_array(path, shape, mmap=True)  # another process may have built it
            if cached is not None:
                return cached
            if path.exists():
                print(f"genrec: ignoring unreadable layer cache ({problem}); rebuilding it", file=sys.stderr)
            save_checked_array(path, lambda tmp: self._build_cache(tmp, shape, batch_size))
        cached, problem = load_checked_array(path, shape, mmap=True)
        if cached is None:
            raise OSError(f"the layer cache just written does not read back ({problem}); check the disk, or set "
                          "PretrainedLMContent.layer_cache = False")
        return cached

    def _build_cache(self, tmp: Path, shape: tuple[int, ...], batch_size: int) -> None:
        """Writes the frozen layers' output for every item into the ``.npy`` file ``tmp``."""
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        starts = range(0, shape[0], batch_size)
        with torch.inference_mode():
            for start in progress(starts, unit="batch", desc=f"caching {self.path} layers 0..{self.frozen_layers - 1}",
                          disable=len(starts) < 2):
                items = torch.arange(start, min(start + batch_size, shape[0]))
                states = self.lower_states(items).cpu().numpy()  # [n, t, H], t <= T; the rest stays 0
                out[start:start + len(items), :states.shape[1]] = states
        out.flush()
        del out

    # -------------------------------------------------------------- forward

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Item vectors [n, D] for item indices [n]."""
        ids, mask = self.tokens(items)
        if self.layer_cache and self._cached is not None:
            rows = np.ascontiguousarray(self._cached[items.cpu().numpy(), :ids.shape[1]])
            states = torch.from_numpy(rows).to(ids.device)
        else:
            states = self.lower_states(items)
        self._mode, self._states = "inject", states
        try:
            hidden = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        finally:
            self._mode, self._states = None, None
        return self.proj(masked_mean(hidden.float(), mask))
