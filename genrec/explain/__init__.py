"""RecExplainer (RecAI): an LLM aligned to a trained genrec recommender as its surrogate, to explain it."""

from genrec.explain.target import item_vectors, trained_sasrec, user_vectors

__all__ = ["item_vectors", "trained_sasrec", "user_vectors"]
