"""Run by tests/test_llm_finetune.py under ``torchrun --nproc_per_node 2`` (CPU, gloo): FSDP2 full shard
of every LlamaDecoderLayer and of the root module, as accelerate's TRANSFORMER_BASED_WRAP does with
config/accelerate/fsdp.yaml. The fast-path loss of the sharded model equals the unsharded model's on
the same packed batch, and three AdamW steps train. Argument: a tiny Llama folder."""

import copy
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM

from genrec.llm.finetune import causal_lm_loss, pack_examples


class Root(torch.nn.Module):
    """Stands in for LCRec: the module that accelerate shards last, whose forward runs the loss."""

    def __init__(self, llm):
        super().__init__()
        self.llm = llm

    def forward(self, **batch):
        return causal_lm_loss(self.llm, **batch)


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
torch.manual_seed(0)
llm = AutoModelForCausalLM.from_pretrained(sys.argv[1])
reference = Root(copy.deepcopy(llm))
model = Root(llm)
for layer in model.llm.model.layers:
    fully_shard(layer, mesh=mesh, reshard_after_forward=True)
fully_shard(model, mesh=mesh, reshard_after_forward=True)
rng = np.random.default_rng(rank)
examples = []
for n in (20, 30, 12, 17):
    ids = rng.integers(3, 1000, n)
    labels = ids.copy()
    labels[: n // 2] = -100
    examples.append((ids, labels))
batch = pack_examples(examples, 2, 40)
sharded, unsharded = model(**batch).item(), reference(**batch).item()
assert abs(sharded - unsharded) < 1e-5, (sharded, unsharded)
weight = model.llm.model.layers[0].self_attn.q_proj.weight
assert type(weight).__name__ == "DTensor" and weight.to_local().shape[0] * world == weight.shape[0]
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
losses = []
for _ in range(3):
    loss = model(**batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
assert losses[-1] < losses[0], losses
print(f"rank {rank}: sharded loss {sharded:.6f} = unsharded {unsharded:.6f}; steps {losses}", flush=True)
dist.destroy_process_group()
