"""Retrieval: top-k items by vector similarity (faiss), for models that serve from item embeddings."""

from genrec.retrieval.index import InnerProductIndex

__all__ = ["InnerProductIndex"]
