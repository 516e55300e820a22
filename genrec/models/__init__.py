"""Recommendation models, one per file (content-based models: :mod:`genrec.models.content`)."""

from genrec.models.cllm4rec import CLLM4Rec
from genrec.models.hstu import HSTU
from genrec.models.lcrec import LCRec
from genrec.models.popularity import MostPopular
from genrec.models.reclm import RecLM
from genrec.models.sasrec import SASRec
from genrec.models.tiger import TIGER

__all__ = ["CLLM4Rec", "HSTU", "LCRec", "MostPopular", "RecLM", "SASRec", "TIGER"]
