"""Recommendation models, one per file."""

from genrec.models.popularity import MostPopular
from genrec.models.sasrec import SASRec

__all__ = ["MostPopular", "SASRec"]
