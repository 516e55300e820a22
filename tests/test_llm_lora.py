"""Shared LoRA settings: LC-Rec's defaults, gin bindings, invalid values, what trains after apply_lora."""

import gin
import pytest
import torch
import transformers

from genrec.llm.lora import LORA_TARGETS, apply_lora, lora_settings


def _tiny(tied: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(config)


def test_defaults_are_lcrec_recipe():
    # The LC-Rec code's lora_finetune.py: r 8, alpha 32, dropout 0.05, every attention and MLP projection.
    assert lora_settings() == dict(r=8, alpha=32, dropout=0.05, target_modules=list(LORA_TARGETS))
    assert set(LORA_TARGETS) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_gin_binding_changes_settings():
    gin.clear_config()
    try:
        gin.parse_config(["lora_settings.alpha = 16", "lora_settings.target_modules = 'all-linear'"])
        assert lora_settings() == dict(r=8, alpha=16, dropout=0.05, target_modules="all-linear")
    finally:
        gin.clear_config()


@pytest.mark.parametrize("kwargs", [dict(r=0), dict(alpha=0), dict(dropout=1.0), dict(target_modules=[])])
def test_invalid_settings_name_the_key(kwargs):
    with pytest.raises(ValueError, match=f"lora_settings.{next(iter(kwargs))}"):
        lora_settings(**kwargs)


def test_apply_lora_trains_adapters_and_token_rows_only():
    model = _tiny(tied=True)
    before = model.get_input_embeddings().weight.detach().clone()
    wrapped = apply_lora(model, lora_settings(r=4, alpha=8, dropout=0.0), trainable_token_indices=[47, 48, 49],
                         task_type="CAUSAL_LM")
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "token_adapter" in n for n in trainable), trainable
    adapted = {n.split(".")[-1] for n, m in wrapped.named_modules() if hasattr(m, "lora_A")}
    assert adapted == set(LORA_TARGETS)
    layer = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / 4)
    # One optimizer step moves only the chosen token rows of the (tied) embedding.
    optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=1.0)
    ids = torch.tensor([[1, 47, 48, 49, 2, 3]])
    wrapped(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = wrapped.get_input_embeddings()(torch.arange(50))
    changed = (after - before).abs().sum(1) > 0
    assert changed[47:].all() and not changed[:47].any()


def test_untied_output_head_trains_with_new_tokens():
    model = _tiny(tied=False)
    wrapped = apply_lora(model, lora_settings(), trainable_token_indices=[49], task_type="CAUSAL_LM")
    assert any("lm_head" in n and p.requires_grad for n, p in wrapped.named_parameters())
    plain = apply_lora(_tiny(tied=False), lora_settings(), task_type="CAUSAL_LM")
    assert not any("lm_head" in n and p.requires_grad for n, p in plain.named_parameters())


def test_unknown_target_modules_is_a_clear_error():
    with pytest.raises(ValueError, match="lora_settings.target_modules"):
        apply_lora(_tiny(), lora_settings(target_modules=["no_such_proj"]))
