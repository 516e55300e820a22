"""Randomized fault sweep (issue 15): damage every artifact kind, feed bad settings, race and kill runs.

    python benchmarks/faults.py            # the full sweep (~170 cases; minutes on 2 CPU cores)
    python benchmarks/faults.py --quick    # ~60 cases, no second trainer of a kind

Families (``benchmarks/fault_cases.py`` and ``fault_runs.py`` hold the in-process ones and define the
outcome classes):

* ``data``: RecBole ``.inter``/``.item`` files, Amazon reviews and MIND news damaged at random
  (cut mid-line, ``nan``/``inf`` values, missing or extra fields, header-only, empty, bad UTF-8, items
  without text);
* ``assets``: a pinned archive's extracted members truncated, altered or deleted, marker and record damaged;
* ``caches``: embedding and frozen-layer caches and the converted LLM folder damaged;
* ``checkpoints``: safetensors checkpoints and ``semantic_ids.json`` damaged;
* ``models``: a file of a saved SASRec, CLLM4Rec or LC-Rec folder damaged, then ``from_pretrained``;
* ``runs``: the shared loop stopped at a random validation, then its files damaged and the run resumed,
  moved, re-run finished, run with another config, or started while the folder is locked;
* ``gin``: the SASRec and RQ-VAE trainers (in-process, through :func:`genrec.config.run`) with bad values;
* ``concurrent``: two SASRec trainers started at once on one run folder;
* ``kill``: the SASRec, RQ-VAE, TIGER, content (NRMS), CLLM4Rec and LC-Rec debug trainers (shortened)
  killed (SIGKILL) at a random step and resumed; the resumed run's ``log.jsonl`` and ``metrics.json``
  must equal an uninterrupted run's.

Prints one JSON line: counts (tried, clear, traceback, silent, lost, unclear), counts per family, the
cases that were not clear, seconds, the load average and thread counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import torch  # noqa: E402

from fault_cases import (Tally, assets_family, cache_family, checkpoint_family, data_family,  # noqa: E402
                         model_family)
from fault_runs import run_family, run_outcome  # noqa: E402

OUTCOMES = ("clear", "traceback", "silent", "lost", "unclear")
SASREC = ["genrec/trainers/sasrec_trainer.py", "config/sasrec/ml100k_debug.gin", "--gin", "fit.max_steps = 40",
          "--gin", "fit.batch_size = 64", "--gin", "fit.eval_every_steps = 10", "--gin", "fit.eval_every_epochs = 1000"]
RQVAE = ["genrec/trainers/rqvae_trainer.py", "config/rqvae/ml100k_debug.gin"]
CONTENT = ["genrec/trainers/content_trainer.py", "config/content/ml100k/nrms_debug.gin", "--gin", "fit.max_steps = 30",
           "--gin", "fit.eval_every_steps = 10"]
LCREC = ["genrec/trainers/lcrec_trainer.py", "config/lcrec/ml100k/lcrec_debug.gin", "--gin", "fit.max_steps = 12",
         "--gin", "fit.eval_every_steps = 6", "--gin", "experiment.eval_rows = 20"]
TIGER = ["genrec/trainers/tiger_trainer.py", "config/tiger/ml100k_debug.gin", "--gin", "fit.eval_every_steps = 15"]
CLLM4REC = ["genrec/trainers/cllm4rec_trainer.py", "config/cllm4rec/ml100k_debug.gin", "--gin", "fit.max_steps = 8",
            "--gin", "fit.eval_every_steps = 4"]

BAD_GIN = [  # (trainer, binding, a word the message must contain)
    ("sasrec", "fit.max_steps = 0", "max_steps"), ("sasrec", "fit.max_steps = -1", "max_steps"),
    ("sasrec", "fit.max_steps = 'ten'", "max_steps"), ("sasrec", "fit.max_steps = 2.5", "max_steps"),
    ("sasrec", "fit.max_epochs = 0", "max_epochs"), ("sasrec", "fit.batch_size = 0", "batch_size"),
    ("sasrec", "fit.batch_size = -64", "batch_size"), ("sasrec", "fit.learning_rate = -0.001", "learning_rate"),
    ("sasrec", "fit.learning_rate = 'fast'", "learning_rate"), ("sasrec", "fit.learning_rate = 0", "learning_rate"),
    ("sasrec", "fit.patience = -1", "patience"), ("sasrec", "fit.patience = 0", "patience"),
    ("sasrec", "fit.eval_every_epochs = 0", "eval_every_epochs"),
    ("sasrec", "fit.eval_every_steps = 0", "eval_every_steps"),
    ("sasrec", "fit.grad_accum_steps = 0", "grad_accum_steps"), ("sasrec", "fit.grad_clip = -1.0", "grad_clip"),
    ("sasrec", "fit.warmup_steps = -5", "warmup_steps"), ("sasrec", "fit.weight_decay = -0.1", "weight_decay"),
    ("sasrec", "fit.log_every_steps = 0", "log_every_steps"), ("sasrec", "fit.mode = 'lowest'", "mode"),
    ("sasrec", "fit.max_stepz = 10", "max_stepz"), ("sasrec", "SASRec.hidden_size = 'wide'", "hidden_size"),
    ("sasrec", "SASRec.hidden_size = -8", "hidden_size"), ("sasrec", "SASRec.num_heads = 3", "num_heads"),
    ("sasrec", "SASRec.dropout = 1.5", "dropout"), ("sasrec", "SASRec.num_layers = 0", "num_layers"),
    ("sasrec", "experiment.dataset = 'ml-20m'", "ml-20m"), ("sasrec", "experiment.split = 'random'", "random"),
    ("sasrec", "train_sasrec.window_stride = 0", "window_stride"),
    ("sasrec", "fit.mixed_precision = 'fp8'", "mixed_precision"),
    ("rqvae", "train_rqvae.codebook_sizes = 8", "codebook_sizes"),
    ("rqvae", "train_rqvae.codebook_sizes = [0, 8]", "codebook_sizes"),
    ("rqvae", "train_rqvae.collision_strategy = 'magic'", "collision_strategy"),
    ("rqvae", "RQVAE.latent_dim = 0", "latent_dim"),
    ("sasrec", "experiment.k_core = 0", "k_core"), ("sasrec", "experiment.k_core = 'five'", "k_core"),
    ("sasrec", "experiment.min_rating = 'high'", "min_rating"), ("sasrec", "experiment.max_history = 0", "max_history"),
    ("sasrec", "experiment.protocol = 'partial'", "protocol"), ("sasrec", "experiment.eval_batch_size = 0", "eval_batch_size"),
    ("sasrec", "experiment.num_negatives = 0", "num_negatives"), ("sasrec", "experiment.eval_rows = -1", "eval_rows"),
    ("sasrec", "experiment.dataset = 'recbole:/no/such/folder'", "/no/such/folder"),
    ("sasrec", "fit.num_workers = -1", "num_workers"), ("sasrec", "fit.max_epochs = 1.5", "max_epochs"),
    ("sasrec", "train_sasrec.seed = 'lucky'", "seed"), ("rqvae", "train_rqvae.seed = -1", "seed"),
    ("sasrec", "fit.max_steps = ", "fit.max_steps"), ("sasrec", "SASRekk.hidden_size = 8", "SASRekk"),
    ("sasrec", "fit.batch_size = [64]", "batch_size"), ("rqvae", "RQVAE.hidden_dims = 128", "hidden_dims"),
]


def gin_family(tally: Tally, rng: random.Random, work: Path, count: int) -> None:
    """Bad bindings through the trainers' own entry (config.run): a non-zero exit naming the binding."""
    import gin

    from genrec.config import run
    from genrec.data import SPLITS
    from genrec.trainers.rqvae_trainer import train_rqvae
    from genrec.trainers.sasrec_trainer import train_sasrec

    entries = {"sasrec": (train_sasrec, SASREC[1], ["fit.max_steps = 3", "fit.eval_every_steps = 3"]),
               "rqvae": (train_rqvae, RQVAE[1], ["fit.max_epochs = 2", "fit.eval_every_epochs = 1"])}
    for n, (trainer, binding, word) in enumerate(rng.sample(BAD_GIN, min(count, len(BAD_GIN)))):
        entry, config, short = entries[trainer]
        argv = [str(REPO / config), "--run-dir", str(work / f"gin{n}")]
        for extra in [*short, binding]:  # the bad binding last: it wins over the short budget
            argv += ["--gin", extra]
        stderr = io.StringIO()
        gin.clear_config()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                run(entry, splits=list(SPLITS), argv=argv)
            tally.add("gin", binding, "silent", "trained with it and exited 0")
        except SystemExit as done:
            message = stderr.getvalue()
            outcome = "traceback" if "Traceback" in message else "clear" if done.code and word in message else "unclear"
            tally.add("gin", binding, outcome, message.strip()[-300:])
        except Exception as error:  # noqa: BLE001 - what escapes config.run is a traceback for the user
            tally.add("gin", binding, "traceback", f"{type(error).__name__}: {error}")
    gin.clear_config()


def _start(command: list[str], run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *command, "--run-dir", str(run_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=900)
    return process.returncode, err


def _reference(command: list[str], run_dir: Path) -> tuple[str, str]:
    code, err = _finish(_start(command, run_dir))
    if code != 0:
        raise SystemExit(f"the reference run {' '.join(command)} failed:\n{err[-2000:]}")
    return (run_dir / "log.jsonl").read_text(), (run_dir / "metrics.json").read_text()


def concurrent_family(tally: Tally, work: Path, count: int, reference: tuple[str, str]) -> None:
    """Two SASRec trainers on one run folder at once: one refused with a clear line, the other's files exact."""
    for n in range(count):
        run_dir = work / f"concurrent{n}"
        first = _start(SASREC, run_dir)
        time.sleep(n * 0.7)  # the second starts at once, or while the first is loading data
        second = _start(SASREC, run_dir)
        (code_a, err_a), (code_b, err_b) = _finish(first), _finish(second)
        errors = err_a + err_b
        if "Traceback" in errors:
            tally.add("concurrent", "two trainers", "traceback", errors[-300:])
        elif sorted([code_a, code_b]) != [0, 2] or "another process is running" not in errors:
            outcome, detail = run_outcome(run_dir, None, *reference)
            tally.add("concurrent", "two trainers", "lost" if outcome == "lost" else "silent",
                      f"exit codes {code_a}, {code_b}: {detail}")
        else:
            outcome, detail = run_outcome(run_dir, json.loads((run_dir / "metrics.json").read_text()), *reference)
            tally.add("concurrent", "two trainers", outcome, detail)


def kill_family(tally: Tally, rng: random.Random, work: Path, name: str, command: list[str], count: int,
                reference: tuple[str, str]) -> None:
    """SIGKILL a trainer after a random number of log records (0 = while starting) or once its first
    checkpoint exists, plus a random delay, then resume it."""
    total = len(reference[0].splitlines())
    for n in range(count):
        run_dir = work / f"kill-{name}{n}"
        target, delay = rng.randrange(0, max(1, total - 2)), rng.random() * 1.5
        at_checkpoint = rng.random() < 0.5
        process = _start(command, run_dir)
        log, checkpoint = run_dir / "log.jsonl", run_dir / "checkpoint.safetensors"
        while process.poll() is None and not (checkpoint.exists() if at_checkpoint else
                                              log.exists() and len(log.read_text().splitlines()) >= target):
            time.sleep(0.05)
        time.sleep(delay)
        if process.poll() is not None:
            process.communicate()
            continue  # finished before the kill: not a case
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
        code, err = _finish(_start(command, run_dir))
        case = f"{name} killed {'at its first checkpoint' if at_checkpoint else f'after {target} records'} + {delay:.1f} s"
        if "Traceback" in err or code != 0:
            tally.add("kill", case, "traceback" if "Traceback" in err else "unclear", err.strip()[-300:])
            continue
        tally.add("kill", case, *run_outcome(run_dir, json.loads((run_dir / "metrics.json").read_text()), *reference))


def sweep(tally: Tally, rng: random.Random, work: Path, quick: bool) -> None:
    """Every family in turn; ``quick`` runs fewer cases and kills only SASRec."""
    for name, family in (("data", lambda w: data_family(tally, rng, w, 1 if quick else 3)),
                         ("assets", lambda w: assets_family(tally, rng, w, 4 if quick else 12)),
                         ("caches", lambda w: cache_family(tally, rng, w, 4 if quick else 10, 2 if quick else 5)),
                         ("checkpoints", lambda w: checkpoint_family(tally, rng, w, 4 if quick else 10)),
                         ("runs", lambda w: run_family(tally, rng, w, 5 if quick else 16)),
                         ("models", lambda w: model_family(tally, rng, w, 2 if quick else 6)),
                         ("gin", lambda w: gin_family(tally, rng, w, 8 if quick else len(BAD_GIN)))):
        (work / name).mkdir()
        family(work / name)
    sasrec_ref = _reference(SASREC, work / "sasrec-reference")
    concurrent_family(tally, work, 1 if quick else 2, sasrec_ref)
    kill_family(tally, rng, work, "sasrec", SASREC, 1 if quick else 3, sasrec_ref)
    if not quick:
        kill_family(tally, rng, work, "rqvae", RQVAE, 3, _reference(RQVAE, work / "rqvae-reference"))
        kill_family(tally, rng, work, "tiger", TIGER, 2, _reference(TIGER, work / "tiger-reference"))
        kill_family(tally, rng, work, "content", CONTENT, 2, _reference(CONTENT, work / "content-reference"))
        kill_family(tally, rng, work, "cllm4rec", CLLM4REC, 1, _reference(CLLM4REC, work / "cllm4rec-reference"))
        kill_family(tally, rng, work, "lcrec", LCREC, 1, _reference(LCREC, work / "lcrec-reference"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 60 cases and one trainer run of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--cases", default=None, help="also write every case as JSON lines to this file")
    args = parser.parse_args()
    rng, started = random.Random(args.seed), time.time()
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="genrec-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # trainers' progress lines: stdout keeps the JSON line
            sweep(tally, rng, work, args.quick)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    counts = {outcome: sum(case["outcome"] == outcome for case in tally.cases) for outcome in OUTCOMES}
    families = {}
    for case in tally.cases:
        families.setdefault(case["family"], dict.fromkeys(OUTCOMES, 0))[case["outcome"]] += 1
    if args.cases:
        Path(args.cases).write_text("".join(json.dumps(case) + "\n" for case in tally.cases))
    print(json.dumps({"benchmark": "faults", "quick": args.quick, "seed": args.seed, "tried": len(tally.cases), **counts,
                      "families": families, "not_clear": [case for case in tally.cases if case["outcome"] != "clear"],
                      "seconds": round(time.time() - started, 1), "load_average": [round(v, 2) for v in os.getloadavg()],
                      "torch_threads": torch.get_num_threads(), "python_threads": threading.active_count(),
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
