"""Recommendation models, one per file."""

from genrec.models.lcrec import LCRec
from genrec.models.popularity import MostPopular
from genrec.models.sasrec import SASRec

__all__ = ["LCRec", "MostPopular", "SASRec"]
