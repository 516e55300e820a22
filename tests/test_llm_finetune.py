"""The fast fine-tuning path: loss on labelled positions only, packed batches, equal to transformers' loss."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from genrec.llm import tiny_causal_lm
from genrec.llm.finetune import IGNORE, causal_lm_loss, labelled_positions, pack_examples, pad_examples
from genrec.llm.lora import apply_lora, lora_settings

PAD = 2


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def llm(request, tmp_path_factory):
    folder = tiny_causal_lm(tmp_path_factory.mktemp("llm") / request.param, architecture=request.param, seed=5)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _examples(lengths=(9, 23, 5, 14, 30), response=4, seed=0, vocab=1000):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(3, vocab, n)
        labels = ids.copy()
        labels[: n - response] = IGNORE
        out.append((ids, labels))
    return out


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_loss_and_gradients_equal_transformers(llm):
    batch = pad_examples(_examples(), PAD)
    reference = llm(**batch, use_cache=False).loss
    expected = _grads(llm, reference)
    loss = causal_lm_loss(llm, **batch)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    got = _grads(llm, loss)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("max_tokens", [None, 32, 48])
def test_packed_rows_equal_padded_rows(llm, max_tokens):
    examples = _examples()
    reference = llm(**pad_examples(examples, PAD), use_cache=False).loss
    expected = _grads(llm, reference)
    packed = pack_examples(examples, PAD, max_tokens)
    assert "attention_mask" not in packed and packed["label_positions"].numel() == 5 * 4
    loss = causal_lm_loss(llm, **packed)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    got = _grads(llm, loss)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)
    # transformers' own forward reads the packed rows the same way
    rows = {k: v for k, v in packed.items() if k != "label_positions"}
    assert llm(**rows, use_cache=False).loss.item() == pytest.approx(reference.item(), abs=1e-5)
    # positions made with the batch select the same rows as the labels do
    assert torch.equal(packed["label_positions"], labelled_positions(packed["labels"]))
    without = causal_lm_loss(llm, **rows)
    assert without.item() == pytest.approx(loss.item(), abs=1e-6)


def test_chunks_equal_one_pass(llm):
    batch = pad_examples(_examples(response=7), PAD)
    whole = causal_lm_loss(llm, **batch)
    expected = _grads(llm, whole)
    chunked = causal_lm_loss(llm, **batch, chunk_size=4)  # 35 labelled positions in 9 chunks
    assert chunked.item() == pytest.approx(whole.item(), abs=1e-5)
    got = _grads(llm, chunked)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def test_lora_with_trainable_tokens_equals_transformers(tmp_path):
    folder = tiny_causal_lm(tmp_path / "llama", seed=2)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    vocab = base.config.vocab_size
    model = apply_lora(base, lora_settings(dropout=0.0), trainable_token_indices=range(vocab - 10, vocab),
                       task_type="CAUSAL_LM")
    with torch.no_grad():  # move the adapters off their zero start so that they matter
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    examples = _examples(vocab=vocab)
    examples[0][0][-3:] = [vocab - 1, vocab - 5, vocab - 10]  # new tokens in a response
    batch = pad_examples(examples, PAD)
    reference = model(**batch, use_cache=False).loss
    expected = _grads(model, reference)
    loss = causal_lm_loss(model, **pack_examples(examples, PAD, 40))
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    got = _grads(model, loss)
    assert expected.keys() == got.keys() and any("token" in n for n in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def test_pack_examples_layout():
    examples = _examples(lengths=(9, 23, 5, 14, 30))
    packed = pack_examples(examples, PAD, 32)
    ids, labels, positions = packed["input_ids"], packed["labels"], packed["position_ids"]
    assert ids.shape[1] <= 32 and ids.shape[0] == 3  # 81 tokens in 3 balanced rows of <= 32: 30 | 23+5 | 14+9
    found = []
    for row in range(ids.shape[0]):
        starts = torch.nonzero(positions[row] == 0).squeeze(1).tolist() + [ids.shape[1]]
        for a, b in zip(starts[:-1], starts[1:]):
            if ids[row, a] == PAD and labels[row, a:b].eq(IGNORE).all() and b - a == 1:
                continue  # a padding slot
            found.append((ids[row, a:b].tolist(), labels[row, a:b].tolist()))
            assert positions[row, a:b].tolist() == list(range(b - a))
            assert labels[row, a] == IGNORE  # nothing predicted across an example boundary
    want = [(i.tolist(), l.tolist()) for i, l in examples]
    assert sorted(found) == sorted(want)
    assert pack_examples(examples, PAD, 10)["input_ids"].shape == (3, 30)  # rows widen to the longest: 30 | 23+5 | 14+9
    assert pack_examples(examples, PAD)["input_ids"].shape == (1, 81)


def test_no_labelled_position_gives_zero_with_a_graph(llm):
    ids = torch.randint(3, 100, (2, 6))
    loss = causal_lm_loss(llm, ids, torch.full_like(ids, IGNORE))
    assert loss.item() == 0.0 and loss.requires_grad


def test_lcrec_forward_equals_transformers_loss(tmp_path):
    from genrec.models.lcrec import LCRec

    model = LCRec(pretrained_path=str(tiny_causal_lm(tmp_path / "llama", seed=1))).train()
    instructions, responses = ["Recommend a film.", "A longer instruction, " * 6], ["Heat (1995)", "Toy Story"]
    batch = model.format.encode(instructions, responses)
    reference = model.llm(**batch, use_cache=False).loss
    output, loss = model(**batch)
    assert output is None and loss.item() == pytest.approx(reference.item(), abs=1e-5)
    packed = pack_examples(model.format.tokenize(instructions, responses), model.tokenizer.pad_token_id)
    assert model(**packed)[1].item() == pytest.approx(reference.item(), abs=1e-5)
    logits, none = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert none is None and logits.shape == (*batch["input_ids"].shape, len(model.tokenizer))


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_accelerate_configs_load(name, kind):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(Path(__file__).resolve().parents[1] / "config" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.mixed_precision == "bf16"
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_reshard_after_forward"] is True
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"


@pytest.mark.slow
def test_fsdp_full_shard_of_decoder_layers_keeps_the_loss(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    folder = tiny_causal_lm(tmp_path / "llama", seed=1)
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
           "tests/llm_fsdp_worker.py", str(folder)]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("= unsharded") == 2
