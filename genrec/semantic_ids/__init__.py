"""Semantic IDs: item text -> embedding -> RQ-VAE codes -> unique code tuples per item; the one owner
of semantic IDs that every generative model uses.

    >>> from genrec.semantic_ids import SemanticIDs, ensure_semantic_ids
    >>> ids = ensure_semantic_ids("runs/rqvae/ml100k/semantic_ids.json", "config/rqvae/ml100k.gin", interactions)
    >>> ids.codes[1]              # codes of item index 1
    array([ 17, 203,   5,   0])
    >>> trie = ids.trie(offset=3, end_token=1)   # what constrained decoding walks

Modules: :mod:`~genrec.semantic_ids.embed` (text embeddings with a content-keyed cache),
:mod:`~genrec.semantic_ids.rqvae` (the model), :mod:`~genrec.semantic_ids.sinkhorn` (balanced
assignment), :mod:`~genrec.semantic_ids.collisions` (uniqueness and codebook health),
:mod:`~genrec.semantic_ids.semantic_ids` (the file and its trie), :mod:`~genrec.semantic_ids.build`
(the RQ-VAE run that builds them, in process, for ``genrec/trainers/rqvae_trainer.py`` and every model
trainer).
"""

from genrec.semantic_ids.build import SEMANTIC_IDS, build_semantic_ids, ensure_semantic_ids
from genrec.semantic_ids.embed import embed_texts
from genrec.semantic_ids.rqvae import RQVAE, RQVAEOutput
from genrec.semantic_ids.semantic_ids import SemanticIDs, SemanticIDsError, ablation_ids, level_token_starts

__all__ = ["RQVAE", "RQVAEOutput", "SEMANTIC_IDS", "SemanticIDs", "SemanticIDsError", "ablation_ids", "build_semantic_ids",
           "embed_texts", "ensure_semantic_ids", "level_token_starts"]
