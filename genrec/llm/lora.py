"""LoRA settings and adapters shared by every model that fine-tunes an LLM (LC-Rec, CLLM4Rec, content).

LoRA (Hu et al., ICLR 2022, arXiv 2106.09685) freezes a pretrained weight ``W`` [D_out, D_in] and
trains a low-rank update: ``h = W x + (alpha / r) * B A dropout(x)`` with ``A`` [r, D_in] and
``B`` [D_out, r], ``B`` initialised to zero so training starts from the pretrained model.

:func:`lora_settings` is the one gin-configurable place where a run chooses ``r``, ``alpha``,
``dropout`` and the adapted modules; its defaults are LC-Rec's (the LC-Rec code's
``lora_finetune.py``: r 8, alpha 32, dropout 0.05 on every attention and MLP projection of a
Llama/Qwen2-style decoder). :func:`apply_lora` wraps a model with peft adapters for those settings
and keeps chosen token rows trainable (LC-Rec's new codebook tokens), which adapters on the
projections alone would leave frozen. A gin file writes ``lora_settings.alpha = 16`` and every model
built from that run reads the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import gin
from torch import nn

__all__ = ["LORA_TARGETS", "apply_lora", "lora_settings"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every attention and MLP projection of a Llama / Qwen2 / Mistral decoder layer (LC-Rec's targets)."""


@gin.configurable
def lora_settings(r: int = 8, alpha: int = 32, dropout: float = 0.05,
                  target_modules: str | Sequence[str] | None = LORA_TARGETS) -> dict:
    """The LoRA hyper-parameters of a run (defaults: LC-Rec's).

    Args:
        r: rank of the update.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout probability on the adapter's input.
        target_modules: names of the modules that get adapters: a list of names (default: every
            attention and MLP projection, :data:`LORA_TARGETS`), ``"all-linear"`` (every linear
            layer but the output head, whatever the architecture) or ``None`` (peft's default for
            the architecture, e.g. BERT: query, value).

    Returns:
        ``dict(r=, alpha=, dropout=, target_modules=)``, a plain JSON-serialisable dict that a saved
        model records and :func:`apply_lora` reads.
    """
    settings = dict(r=int(r), alpha=alpha, dropout=float(dropout),
                    target_modules=target_modules if target_modules is None or isinstance(target_modules, str)
                    else list(target_modules))
    _check(settings)
    return settings


def _check(settings: dict) -> None:
    missing = {"r", "alpha", "dropout", "target_modules"} - set(settings)
    if missing:
        raise ValueError(f"LoRA settings lack {sorted(missing)}; build them with genrec.llm.lora.lora_settings()")
    if settings["r"] < 1:
        raise ValueError(f"lora_settings.r must be >= 1, got {settings['r']}")
    if not settings["alpha"] > 0:
        raise ValueError(f"lora_settings.alpha must be > 0, got {settings['alpha']}")
    if not 0 <= settings["dropout"] < 1:
        raise ValueError(f"lora_settings.dropout must be in [0, 1), got {settings['dropout']}")
    targets = settings["target_modules"]
    if targets is not None and not isinstance(targets, str) and not len(targets):
        raise ValueError("lora_settings.target_modules is empty: name the modules that get adapters, "
                         "'all-linear', or None for peft's default")


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError("the output head is not a submodule of the model")


def apply_lora(model: nn.Module, settings: dict, trainable_token_indices: Sequence[int] | None = None,
               modules_to_save: Sequence[str] | None = None, task_type: str | None = None,
               gradient_checkpointing: bool = False) -> nn.Module:
    """Wraps ``model`` with peft LoRA adapters; returns the peft model (the base weights frozen).

    Args:
        model: a transformers model (causal LM, backbone or encoder).
        settings: a dict from :func:`lora_settings`.
        trainable_token_indices: input-embedding rows that train in full next to the adapters (e.g.
            tokens added to the vocabulary). When the model has an output head that is not tied to
            the input embeddings, the whole head trains too (its new rows must learn as well).
        modules_to_save: further module names that train in full (e.g. a classification head).
        task_type: peft task type, ``"CAUSAL_LM"`` for a causal LM (adapters then save with the
            base model's name); ``None`` for a backbone or encoder.
        gradient_checkpointing: the model recomputes activations; checkpointed blocks then need an
            input that requires grad, which frozen embeddings do not give (peft's
            ``enable_input_require_grads``).

    Raises:
        ValueError: invalid settings, or no module of the model matches ``target_modules``.
    """
    from peft import LoraConfig, get_peft_model

    _check(settings)
    save = list(modules_to_save or [])
    tokens = None
    if trainable_token_indices is not None:
        tokens = [int(i) for i in trainable_token_indices]
        if not tokens:
            raise ValueError("trainable_token_indices is empty; pass None when no token rows train")
        embeddings = model.get_input_embeddings()
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None and output.weight.data_ptr() != embeddings.weight.data_ptr():
            save.append(_module_name(model, output))
    targets = settings["target_modules"]
    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=targets if targets is None or isinstance(targets, str) else list(targets),
                        trainable_token_indices=tokens, modules_to_save=save or None, task_type=task_type)
    try:
        with warnings.catch_warnings():  # peft 0.21 probes transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = get_peft_model(model, config)
    except ValueError as err:
        raise ValueError(f"LoRA could not be applied ({err}); set lora_settings.target_modules to names of the "
                         "model's linear layers, or to 'all-linear'") from err
    if gradient_checkpointing:
        wrapped.enable_input_require_grads()
    return wrapped
