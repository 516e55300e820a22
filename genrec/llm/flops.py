"""Model FLOPs of causal-LM fine-tuning and the device's measured matmul peak: tokens/s and MFU.

Model FLOPs are what a training step needs, counted the same way for every path: per real token
2 x P (forward) + 2 x P (input gradients) + 2 x P_trainable (weight gradients) over the decoder's P
parameters (embeddings and output head excluded), attention 12 x layers x D x l^2 per example of l
tokens (forward and backward), and the output head (2 + 2, + 2 if trained) x V x D per labelled
token only, the work the loss needs (:func:`genrec.llm.finetune.causal_lm_loss`). Padding, and a
head applied to every position, are waste and not counted. MFU is model FLOP/s over
:func:`genrec.training.measures.matmul_peak`, measured on the same device (fp32 on a CPU, bf16 on
a GPU).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fine_tuning_flops"]


def fine_tuning_flops(llm: torch.nn.Module, lengths: np.ndarray, labelled: int) -> float:
    """Model FLOPs of training ``llm`` (peft-wrapped or not) once on examples of ``lengths`` tokens with
    ``labelled`` labelled tokens in all (module docstring)."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    config = base.config
    embedding_ids = {id(p) for p in base.get_input_embeddings().parameters()}
    embedding_ids |= {id(p) for p in base.get_output_embeddings().parameters()}
    decoder = [p for n, p in base.named_parameters() if id(p) not in embedding_ids and "token_adapter" not in n
               and "lm_head" not in n]
    total = sum(p.numel() for p in decoder)
    trainable = sum(p.numel() for p in decoder if p.requires_grad)
    head_trains = base.get_output_embeddings().weight.requires_grad
    lengths = np.asarray(lengths, dtype=np.float64)
    attention = 12.0 * config.num_hidden_layers * config.hidden_size * float((lengths ** 2).sum())
    head = (6.0 if head_trains else 4.0) * config.vocab_size * config.hidden_size * labelled
    return (4.0 * total + 2.0 * trainable) * float(lengths.sum()) + attention + head
