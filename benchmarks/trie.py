"""PrefixTrie build cost, memory and per-beam-step lookup time against catalogue size; prints one JSON line.

    python benchmarks/trie.py                      # N = 1e3 .. 1e6, about 10 s on 2 idle CPU cores
    python benchmarks/trie.py --sizes 1000 50000 --device cuda

Items are synthetic semantic IDs: C = 4 levels x 256 codes, drawn uniformly (seeded) and
de-duplicated, with token = level * 256 + code, so V = 1024. For each catalogue size it reports:

* ``items``, ``build_s`` (seconds to build the trie from the [N, 4] array), ``nodes`` and
  ``bytes`` (memory of the trie's tensors; grows with the nodes, not with nodes x V);
* ``step_us`` per depth d = 0..3 and its mean: the trie work of one step of
  ``constrained_beam_search`` for B*K = 20*20 = 400 beams whose prefixes are d tokens of random
  items: ``allowed_mask`` of their nodes into [400, V] plus ``next_nodes`` with the chosen tokens;
* ``walk_us`` per depth and its mean: the work of one ``TrieLogitsProcessor`` call, which walks
  the whole d-token prefix (d lookups) and builds the same mask;
* ``mask_alloc_us``: allocating the [400, V] boolean mask alone, the floor of any masking step.

Times are medians of ``--repeats`` runs, in microseconds; the machine should be otherwise idle
(other processes on the same cores inflate them many times). A step costs time in proportion to the
True entries of its mask, B*K x the fan-out of the beams' nodes (at most 256 here), and not to N:
at a given depth ``step_us`` stops growing once the nodes at that depth are full (256 children),
and the deepest levels, with a handful of children per node, stay a few hundred microseconds
above ``mask_alloc_us`` from 10^3 to 10^6 items.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.decoding import PrefixTrie  # noqa: E402

LEVELS, CODES, BEAMS = 4, 256, 20 * 20


def semantic_ids(num_items: int, seed: int) -> np.ndarray:
    """Distinct random tokens [N', LEVELS] (N' <= N after de-duplication), in random order."""
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, CODES, size=(num_items, LEVELS)), axis=0)
    return rng.permutation(codes) + np.arange(LEVELS) * CODES


def median_us(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in microseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return round(1e6 * statistics.median(times), 1)


def measure(num_items: int, repeats: int, device: torch.device, seed: int) -> dict:
    """Build and lookup figures for one catalogue size."""
    tokens = semantic_ids(num_items, seed)
    start = time.perf_counter()
    trie = PrefixTrie(tokens, vocab_size=LEVELS * CODES)
    build_s = time.perf_counter() - start
    trie.to(device)

    beams = torch.from_numpy(tokens[np.random.default_rng(seed + 1).integers(0, len(tokens), BEAMS)]).to(device)
    step_us, walk_us = [], []
    for depth in range(LEVELS):
        prefixes, chosen = beams[:, :depth], beams[:, depth]
        nodes = trie.walk(prefixes)
        step_us.append(median_us(lambda: (trie.allowed_mask(nodes, trie.vocab_size),
                                          trie.next_nodes(nodes, chosen)), repeats, device))
        walk_us.append(median_us(lambda: trie.allowed_mask(trie.walk(prefixes), trie.vocab_size),
                                 repeats, device))
    mask_alloc_us = median_us(lambda: torch.zeros(BEAMS, trie.vocab_size, dtype=torch.bool, device=device),
                              repeats, device)
    return {"items": len(trie), "build_s": round(build_s, 3), "nodes": trie.num_nodes, "bytes": trie.nbytes,
            "step_us": step_us, "step_us_mean": round(statistics.mean(step_us), 1),
            "walk_us": walk_us, "walk_us_mean": round(statistics.mean(walk_us), 1),
            "mask_alloc_us": mask_alloc_us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6],
                        help="numbers of items N to draw (before de-duplication)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per median")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    results = [measure(n, args.repeats, device, args.seed) for n in args.sizes]
    print(json.dumps({"benchmark": "trie", "device": str(device), "torch_threads": torch.get_num_threads(),
                      "levels": LEVELS, "codes": CODES, "vocab": LEVELS * CODES, "beams": BEAMS,
                      "results": results}))


if __name__ == "__main__":
    main()
