"""LC-Rec (LoRA and full fine-tuning) next to our SASRec on MovieLens-100k; prints one JSON line.

    python benchmarks/lcrec.py                                  # the CPU budget below (25 min on 2 idle cores)
    python benchmarks/lcrec.py --steps 120 --eval-users 200     # a longer one (about 70 min, by extrapolation)
    python benchmarks/lcrec.py --full-recipe                    # LC-Rec's recipe as configured (a GPU job)

Three parts, all measured in this run on this machine:

* ``quality``: each model trained by its own trainer in a child process on the leave-one-out split
  of ml-100k (seed 2020), then evaluated by full ranking (LC-Rec: 20-beam trie-constrained
  generation) on the same fixed random sample of ``--eval-users`` valid and test users
  (``experiment.eval_rows``; SASRec is scored on the same rows). Reported: test NDCG@10 /
  Recall@10, the wall time of the whole child process (semantic IDs exist already, the SmolLM2
  conversion is cached), and its peak resident memory. The CPU budget trains LC-Rec for ``--steps``
  optimizer steps of ``--batch-size`` examples drawn from ``--seqrec-examples`` sliding windows
  plus one item2index and one index2item example per item (a small fraction of one epoch of the
  recipe, which is ~100k examples per epoch); SASRec runs ``--sasrec-config`` (default its debug
  recipe, 10 epochs, about a minute; ``config/sasrec/ml100k.gin`` for the full one).
* ``throughput``: fine-tuning tokens per second (non-padding tokens of real training batches,
  forward + backward + AdamW step, after one warm-up step) for full and LoRA fine-tuning.
* ``mfu``: model FLOPs per second (6 x parameters + attention, per token, the PaLM convention; for
  LoRA this overstates the work, since frozen weights get no weight gradient) over the machine's
  measured dense fp32 matmul FLOP/s (square 2048 x 2048 matrix products, median of repeats).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.data import load_dataset  # noqa: E402
from genrec.llm.tasks import TaskData  # noqa: E402
from genrec.llm.lora import lora_settings  # noqa: E402
from genrec.models.lcrec import LCRec  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.semantic_ids import ensure_semantic_ids  # noqa: E402
from trainer_run import run_trainer  # noqa: E402  (benchmarks/, this script's folder)

SEMANTIC_IDS, RQVAE = "runs/rqvae/ml100k/semantic_ids.json", "config/rqvae/ml100k.gin"


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """Measured dense fp32 matmul FLOP/s of this machine (median of ``repeats`` products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / sorted(times)[len(times) // 2]


def throughput(lora: bool, batch_size: int, steps: int, seed: int = 2020) -> dict:
    """Tokens/s and model FLOP/s of LC-Rec fine-tuning on real ml-100k batches."""
    interactions, catalog = load_dataset("ml-100k")
    ids = ensure_semantic_ids(SEMANTIC_IDS, RQVAE, interactions)
    torch.manual_seed(seed)
    model = LCRec()
    model.attach(ids, init="mean", item_texts=catalog.texts())
    if lora:
        model.enable_lora(lora_settings())
    # padded batches, as when this benchmark's README figures were measured; the packed fast path is
    # measured against them by benchmarks/llm_throughput.py
    data = TaskData(interactions.split("loo").train, model.item_code_strings, catalog, model.format, seed=seed,
                    packing=False)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    config = model.llm.config
    params = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" not in n and "trainable_tokens" not in n)
    tokens = flops = 0.0
    elapsed = 0.0
    for step in range(steps + 1):
        batch = data.__getitems__(order[step * batch_size:(step + 1) * batch_size].tolist())
        start = time.perf_counter()
        _, loss = model(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            continue  # warm-up
        elapsed += time.perf_counter() - start
        lengths = batch["attention_mask"].sum(1).float()
        tokens += float(lengths.sum())
        # 6N per token for the weights, 12 * layers * hidden * length per token for attention (fwd+bwd)
        flops += float(6 * params * lengths.sum() + 12 * config.num_hidden_layers * config.hidden_size
                       * (lengths**2).sum())
    return {"tokens_per_second": round(tokens / elapsed, 1), "model_flops_per_second": flops / elapsed,
            "seconds_per_step": round(elapsed / steps, 2), "batch_size": batch_size, "steps": steps,
            "parameters": params, "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def train(trainer: str, config: str, run_dir: Path, bindings: list[str]) -> dict:
    """Runs one trainer in a child process; its metrics, wall time and peak memory."""
    metrics, wall = run_trainer(trainer, config, run_dir, bindings)
    test = metrics["test"]
    row = {"test_ndcg@10": round(test["ndcg@10"], 4), "test_recall@10": round(test["recall@10"], 4),
           "valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4), "wall_seconds": round(wall, 1),
           "train_seconds": metrics.get("train_seconds"), "peak_rss_mib": metrics.get("peak_rss_mib"),
           "steps": metrics.get("steps")}
    for key in ("valid_item_rate", "duplicate_rate"):
        if key in test:
            row[key] = test[key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="LC-Rec optimizer steps (CPU budget)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seqrec-examples", type=int, default=4000)
    parser.add_argument("--eval-users", type=int, default=100, help="valid and test users evaluated (all: 943)")
    parser.add_argument("--throughput-steps", type=int, default=4)
    parser.add_argument("--sasrec-config", default="config/sasrec/ml100k_debug.gin")
    parser.add_argument("--full-recipe", action="store_true", help="LC-Rec's configured recipe (GPU) instead")
    parser.add_argument("--skip", action="append", default=[], choices=["lcrec_full", "lcrec_lora", "sasrec",
                                                                          "throughput"])
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log

    ensure_semantic_ids(SEMANTIC_IDS, RQVAE, load_dataset("ml-100k")[0])  # built once, outside the timings
    eval_rows = [] if args.full_recipe else [f"experiment.eval_rows = {args.eval_users}"]
    budget = [] if args.full_recipe else [
        f"fit.max_steps = {args.steps}", f"fit.batch_size = {args.batch_size}", "fit.grad_accum_steps = 1",
        f"fit.warmup_steps = {max(1, args.steps // 20)}", "fit.max_epochs = 1", "fit.eval_every_epochs = 1",
        f"TaskData.max_seqrec_examples = {args.seqrec_examples}",
        # the CPU budget's mix and test (its README figures): seqrec + the two index tasks, the first template
        "TaskData.tasks = ['seqrec', 'item2index', 'index2item']", "train_lcrec.test_templates = 'first'"]
    out: dict = {"benchmark": "lcrec", "dataset": "ml-100k", "split": "loo", "protocol": "full", "seed": 2020,
                 "eval_users": "all" if args.full_recipe else args.eval_users,
                 "budget": "recipe" if args.full_recipe else {"steps": args.steps, "batch_size": args.batch_size,
                                                              "seqrec_examples": args.seqrec_examples},
                 "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="lcrec-bench-") as tmp:
        runs = {"sasrec": ("sasrec", args.sasrec_config, eval_rows),
                "lcrec_lora": ("lcrec", "config/lcrec/ml100k/lcrec_lora.gin", eval_rows + budget),
                "lcrec_full": ("lcrec", "config/lcrec/ml100k/lcrec.gin", eval_rows + budget)}
        out["quality"] = {name: train(trainer, config, Path(tmp) / name, bindings)
                          for name, (trainer, config, bindings) in runs.items() if name not in args.skip}
    if "throughput" not in args.skip:
        peak = matmul_flops()
        out["matmul_flops_per_second"] = round(peak / 1e9, 1) * 1e9
        out["throughput"] = {}
        for name, lora in (("full", False), ("lora", True)):
            row = throughput(lora, args.batch_size, args.throughput_steps)
            row["mfu"] = round(row["model_flops_per_second"] / peak, 3)
            row["model_flops_per_second"] = round(row["model_flops_per_second"] / 1e9, 2) * 1e9
            out["throughput"][name] = row
    out["peak_rss_mib_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
