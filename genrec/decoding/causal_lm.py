"""Trie-constrained beam search over a Hugging Face causal LM (LC-Rec's decoder, and any LLM that
generates item token sequences).

Two implementations that return the same items, both scoring a beam by the sum of its tokens'
log-probabilities (end token included, no length penalty):

* :func:`causal_lm_beam_search` (the default): the prompt runs once per user and all K beams of a
  prompt share its KV-cache row (tree attention). Step t feeds the K beams' newest tokens as K query
  positions appended to the prompt's cache; a 4-D attention mask lets each query see the prompt and
  exactly its own beam's earlier tokens (its ancestry). Beam reordering permutes the small
  [B*K, t*K] ancestry mask instead of copying a [B*K, L] cache. Needs ``sdpa`` or ``eager``
  attention (custom 4-D masks).
* :func:`hf_beam_search`: ``llm.generate`` with :class:`~genrec.decoding.TrieLogitsProcessor`, for
  attention implementations that take no 4-D mask.

Prompts are left-padded (every row's last column a real token). Shapes: B batch, K beams,
L prompt length, T generated length, V vocabulary.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from genrec.decoding.beam_search import TrieLogitsProcessor, constrained_beam_search
from genrec.decoding.trie import PrefixTrie

__all__ = ["DECODERS", "cache_argument", "causal_lm_beam_search", "decode_items", "hf_beam_search", "output_cache"]

DECODERS = ("beam", "hf")


def cache_argument(model) -> str:
    """The keyword a transformers model's ``forward`` takes its KV cache by: ``cache`` from
    transformers 5.24 on (``past_key_values`` is deprecated there and goes in 5.40), ``past_key_values``
    before. A peft wrapper is looked through to its base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache of a model output, under either name (see :func:`cache_argument`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def decode_items(llm, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: PrefixTrie, num_beams: int,
                 pad_token_id: int, eos_token_id: int, method: str = "beam") -> tuple[torch.Tensor, torch.Tensor]:
    """Checks the arguments and runs the chosen decoder (``beam`` or ``hf``).

    Returns:
        (values LongTensor [B, K], the trie value (item index) of each beam, best first, -1 where
        fewer than K sequences are reachable; scores FloatTensor [B, K]).
    """
    if method not in DECODERS:
        raise ValueError(f"unknown decoding method {method!r}; use one of {', '.join(DECODERS)}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if attention_mask[:, -1].eq(0).any():
        raise ValueError("prompts must be left-padded (every row's last column a real token)")
    if method == "hf":
        return hf_beam_search(llm, input_ids, attention_mask, trie, num_beams, pad_token_id, eos_token_id)
    return causal_lm_beam_search(llm, input_ids, attention_mask, trie, num_beams, pad_token_id)


def causal_lm_beam_search(llm, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: PrefixTrie,
                          num_beams: int, pad_token_id: int,
                          prompt_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search in which all K beams of a prompt share one KV-cache row (see the module docstring).

    Args:
        llm: a transformers causal LM with ``sdpa`` or ``eager`` attention.
        input_ids, attention_mask: LongTensor [B, L], left-padded prompts.
        trie: the valid generated sequences (ending with the end token) and their values.
        num_beams: K.
        pad_token_id: fed for beams that have finished (their log-probs are ignored).
        prompt_embeds: [B, L, D] input embeddings of the prompts, used instead of looking up
            ``input_ids`` (soft tokens, :mod:`genrec.llm.soft_tokens`); generated tokens are words.

    Returns:
        As :func:`decode_items`.
    """
    implementation = getattr(llm.config, "_attn_implementation", "sdpa")
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"decoder 'beam' needs 'sdpa' or 'eager' attention (custom 4-D masks), the model uses "
                         f"{implementation!r}; use decoder 'hf'")
    batch, k = input_ids.shape[0], num_beams
    positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
    prompt = {"input_ids": input_ids} if prompt_embeds is None else {"inputs_embeds": prompt_embeds}
    out = llm(**prompt, attention_mask=attention_mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    first = F.log_softmax(out.logits[:, -1].float(), dim=-1).repeat_interleave(k, 0)
    cache, prompt_mask = output_cache(out), attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
    cache_name = cache_argument(llm)
    next_position = attention_mask.sum(1, keepdim=True)  # [B, 1]
    dtype = llm.get_input_embeddings().weight.dtype
    own = torch.zeros(batch * k, k, dtype=torch.bool, device=input_ids.device)
    own[torch.arange(batch * k), torch.arange(batch * k) % k] = True  # each beam sees its own newest slot

    def step(tokens, ancestry, parents):
        if parents is None:
            return first, ancestry
        t = tokens.shape[1]
        ancestry = torch.cat([ancestry[parents], own], dim=1)  # [B*K, t*K] generated slots each beam sees
        mask = torch.cat([prompt_mask.expand(batch, 1, k, -1), ancestry.view(batch, 1, k, t * k)], dim=3)
        if implementation == "eager":
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        last = torch.where(tokens[:, -1] >= 0, tokens[:, -1], pad_token_id).view(batch, k)  # finished beams: padding
        out = llm(input_ids=last, attention_mask=mask, position_ids=(next_position + t - 1).expand(batch, k),
                  use_cache=True, **{cache_name: cache})
        return F.log_softmax(out.logits.float(), dim=-1).view(batch * k, -1), ancestry

    empty = torch.zeros(batch * k, 0, dtype=torch.bool, device=input_ids.device)
    values, scores, _ = constrained_beam_search(step, trie, batch, k, empty)
    return values, scores


def hf_beam_search(llm, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: PrefixTrie, num_beams: int,
                   pad_token_id: int, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``llm.generate`` beam search restricted by :class:`TrieLogitsProcessor`; returns as :func:`decode_items`."""
    from transformers import GenerationConfig, LogitsProcessorList

    prompt_length = input_ids.shape[1]
    config = GenerationConfig(num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                              max_new_tokens=trie.max_depth, length_penalty=0.0, early_stopping=True,
                              pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    processor = TrieLogitsProcessor(trie, prompt_length, eos_token_id=None)
    out = llm.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                       logits_processor=LogitsProcessorList([processor]), return_dict_in_generate=True,
                       output_scores=True)
    generated = out.sequences[:, prompt_length:]
    values = trie.values(trie.walk(generated)).view(-1, num_beams)
    return values, out.sequences_scores.float().view(-1, num_beams)
