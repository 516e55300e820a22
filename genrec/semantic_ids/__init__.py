"""Semantic IDs: item text -> embedding -> RQ-VAE codes -> unique code tuples per item.

    >>> from genrec.semantic_ids import SemanticIDs
    >>> ids = SemanticIDs.load("runs/rqvae/ml100k/semantic_ids.json", interactions)
    >>> ids.codes[1]              # codes of item index 1
    array([ 17, 203,   5,   0])

Modules: :mod:`~genrec.semantic_ids.embed` (text embeddings with a content-keyed cache),
:mod:`~genrec.semantic_ids.rqvae` (the model), :mod:`~genrec.semantic_ids.sinkhorn` (balanced
assignment), :mod:`~genrec.semantic_ids.collisions` (uniqueness and codebook health),
:mod:`~genrec.semantic_ids.semantic_ids` (the file downstream trainers read). The trainer is
``genrec/trainers/rqvae_trainer.py``.
"""

from genrec.semantic_ids.embed import embed_texts
from genrec.semantic_ids.rqvae import RQVAE, RQVAEOutput
from genrec.semantic_ids.semantic_ids import SemanticIDs, SemanticIDsError

__all__ = ["RQVAE", "RQVAEOutput", "SemanticIDs", "SemanticIDsError", "embed_texts"]
