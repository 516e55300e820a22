"""Language models for recommendation: model resolution (hub id, local folder, bundled), prompt tasks."""

from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm, load_tokenizer, resolve_llm, tiny_causal_lm

__all__ = ["BUNDLED_LLM", "load_causal_lm", "load_tokenizer", "resolve_llm", "tiny_causal_lm"]
