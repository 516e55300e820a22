"""RecLM-emb on MovieLens-100k: frozen vs fine-tuned encoder per query type, and faiss query latency;
prints one JSON line.

    python benchmarks/retrieval.py [--config config/retrieval/ml100k_debug.gin] [--run-dir DIR] [--threads 1]

Trains (or, when ``--run-dir`` holds a finished run, reuses) the retrieval trainer's run, then
evaluates the frozen base encoder on the same ``test`` queries (held-out users and items) and reports
Hit/NDCG/Recall@1/5/10/20 per query type for both, the expected Hit@10 of a random ranking, and the
two targets: fine-tuned ``uh2i`` Hit@10 >= 1.5x the frozen encoder's, and every query type above
random. Latency: 1,000 queries against the fine-tuned item vectors with a flat and an HNSW index,
best of three: the faiss call alone and :meth:`InnerProductIndex.search` (which adds the per-row
exclusion and tensor conversion in Python); query encoding is excluded and reported separately, with the
load average and torch threads beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gin  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from genrec.config import parse_gin  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.retrieval.encoder import RetrievalEncoder  # noqa: E402
from genrec.retrieval.evaluate import encoder_evaluator  # noqa: E402
from genrec.retrieval.index import InnerProductIndex  # noqa: E402
from genrec.retrieval.queries import QUERY_TYPES, QueryGenerator  # noqa: E402
from genrec.trainers.retrieval_trainer import train_retrieval  # noqa: E402
from genrec.training import experiment  # noqa: E402

KEYS = ("hit@1", "hit@5", "hit@10", "hit@20", "ndcg@10", "recall@10", "recall@20")


def latency(item_vectors: np.ndarray, query_vectors: np.ndarray, kind: str, k: int = 10) -> dict:
    index = InnerProductIndex(item_vectors, kind=kind)
    index.search(query_vectors[:10], k)  # warm-up
    raw, wrapped = [], []
    for _ in range(3):  # the best of three runs of the whole query set
        t0 = time.perf_counter()
        index.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        items, _ = index.search(query_vectors, k)
        wrapped.append(time.perf_counter() - t0)
    per_1000 = 1000 * 1000 / len(query_vectors)
    return {"faiss_ms_per_1000_queries": round(min(raw) * per_1000, 2),
            "search_ms_per_1000_queries": round(min(wrapped) * per_1000, 2), "items": items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/retrieval/ml100k.gin")
    parser.add_argument("--run-dir", default=None, help="default: runs/retrieval/<config name>")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gin", action="append", default=[])
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(REPO)
    run_dir = args.run_dir or f"runs/retrieval/{Path(args.config).stem}"
    parse_gin([args.config], [f"train_retrieval.run_dir = {run_dir!r}", *args.gin])
    t0 = time.perf_counter()
    metrics = train_retrieval()
    trained_seconds = time.perf_counter() - t0
    base = gin.query_parameter("RetrievalEncoder.model")

    exp = experiment()  # the same gin: same dataset and queries
    generator = QueryGenerator(exp.interactions, exp.catalog)
    queries = {which: generator.queries(which) for which in ("valid", "test")}
    texts = [exp.catalog.text(i) for i in range(1, exp.num_items + 1)]
    frozen = encoder_evaluator(texts, queries)(RetrievalEncoder(model=base), "test")
    tuned = metrics["test"]

    per_type = {kind: {"frozen": {key: frozen[f"{kind}/{key}"] for key in KEYS},
                       "fine_tuned": {key: tuned[f"{kind}/{key}"] for key in KEYS},
                       "random_hit@10": tuned[f"{kind}/random_hit@10"], "queries": tuned[f"{kind}/queries"]}
                for kind in QUERY_TYPES}
    ratio = tuned["uh2i/hit@10"] / max(frozen["uh2i/hit@10"], 1e-12)
    above = {kind: tuned[f"{kind}/hit@10"] > tuned[f"{kind}/random_hit@10"] for kind in QUERY_TYPES}

    model = RetrievalEncoder.from_pretrained(Path(run_dir) / "model")
    item_vectors = model.encode(texts, query=False)
    rng = np.random.default_rng(0)
    rows = [queries["test"][i] for i in rng.choice(len(queries["test"]), 1000, replace=True)]
    t1 = time.perf_counter()
    query_vectors = model.encode([q.text for q in rows], query=True)
    encode_ms = (time.perf_counter() - t1) * 1000
    flat, hnsw = latency(item_vectors, query_vectors, "flat"), latency(item_vectors, query_vectors, "hnsw")
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(flat.pop("items").tolist(),
                                                                        hnsw.pop("items").tolist())]))
    out = {
        "benchmark": "retrieval", "config": args.config, "run_dir": run_dir, "base_model": base,
        "dataset": exp.info["dataset"], "queries": metrics.get("queries"),
        "steps": metrics["steps"], "train_seconds": metrics["train_seconds"], "wall_seconds": round(trained_seconds, 1),
        "per_type": per_type,
        "mean": {"frozen_hit@10": frozen["mean/hit@10"], "fine_tuned_hit@10": tuned["mean/hit@10"],
                 "frozen_ndcg@10": frozen["mean/ndcg@10"], "fine_tuned_ndcg@10": tuned["mean/ndcg@10"]},
        "target_uh2i_hit@10_ratio": round(ratio, 3), "target_uh2i_met": ratio >= 1.5,
        "above_random": above, "target_all_above_random": all(above.values()),
        "latency": {"flat": flat, "hnsw": hnsw, "hnsw_top10_overlap_with_flat": round(overlap, 4),
                    "encode_ms_per_1000_queries": round(encode_ms, 1), "items": len(texts), "k": 10},
        "load_average": [round(x, 2) for x in os.getloadavg()], "torch_threads": torch.get_num_threads(),
        "faiss_threads": __import__("faiss").omp_get_max_threads(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
