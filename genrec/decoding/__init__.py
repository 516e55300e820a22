"""Constrained decoding: generate only token sequences that name a real item.

- :class:`PrefixTrie`: the valid sequences (semantic IDs, item-title tokens) and the item each one
  maps to, built with numpy and queried for whole batches of beams with tensor lookups.
- :class:`TrieLogitsProcessor`: the constraint as a transformers ``LogitsProcessor`` for
  ``model.generate(logits_processor=...)``.
- :func:`constrained_beam_search`: a deterministic batched beam search over the trie for models
  that expose a ``step_fn`` (with KV-cache reordering through ``beam_parents``).
- :func:`decode_items` (:mod:`~genrec.decoding.causal_lm`): that search over a Hugging Face causal
  LM with a prompt KV cache shared by the beams (tree attention), or HF ``generate`` + the processor.
"""

from genrec.decoding.beam_search import StepFn, TrieLogitsProcessor, constrained_beam_search
from genrec.decoding.causal_lm import (DECODERS, cache_argument, causal_lm_beam_search, decode_items, hf_beam_search,
                                      output_cache)
from genrec.decoding.trie import PrefixTrie

__all__ = ["DECODERS", "PrefixTrie", "StepFn", "TrieLogitsProcessor", "cache_argument", "causal_lm_beam_search",
           "constrained_beam_search", "decode_items", "hf_beam_search", "output_cache"]
