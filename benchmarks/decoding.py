"""Beam-20 trie-constrained decoding of the same LC-Rec prompts, three ways; prints one JSON line.

    python benchmarks/decoding.py                       # bundled SmolLM2, ml-100k, 16 test users
    python benchmarks/decoding.py --model runs/lcrec/ml100k/lcrec_debug/model --users 32
    python benchmarks/decoding.py --device cuda --users 256 --batch-size 32

Paths, all deterministic beam search with K beams over the trie of the items' code tokens + eos
(so every beam is a catalogue item and a beam's score is the sum of its tokens' log-probabilities,
end token included; ``length_penalty = 0``):

* ``hf_prefix_fn`` (a): HF ``generate`` with ``prefix_allowed_tokens_fn`` walking the trie in
  Python per beam and step: what LC-Rec and the GenRec zoo do, made correct (a real trie instead
  of a per-level whitelist);
* ``hf_processor``: HF ``generate`` with our vectorised :class:`~genrec.decoding.TrieLogitsProcessor`;
* ``ours`` (b): :meth:`LCRec.generate` ``method="beam"``: the prompt runs once per user and its KV
  cache is shared by the K beams (tree attention), with :func:`constrained_beam_search`.

``speedup`` = seconds of (a) / seconds of (b); ``same_items`` is true when (a) and (b) return the
same K items in the same order for every user (``same_item_rate`` gives the share of users).
Without ``--model`` the codebook tokens of the bundled SmolLM2 are initialised from item text
(``init="mean"``), not trained: decoding cost does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.data import load_dataset  # noqa: E402
from genrec.models.lcrec import LCRec  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402


def _hf(model: LCRec, prompts: dict, num_beams: int, prefix_fn: bool):
    from transformers import LogitsProcessorList

    from genrec.decoding import TrieLogitsProcessor

    length = prompts["input_ids"].shape[1]
    trie = model.trie
    constraint = ({"prefix_allowed_tokens_fn": trie.prefix_allowed_tokens_fn(length, model.tokenizer.eos_token_id)}
                  if prefix_fn else {"logits_processor": LogitsProcessorList([TrieLogitsProcessor(trie, length)])})
    out = model.llm.generate(**prompts, num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                             max_new_tokens=trie.max_depth, length_penalty=0.0, early_stopping=True,
                             pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id,
                             return_dict_in_generate=True, output_scores=True, **constraint)
    items = trie.values(trie.walk(out.sequences[:, length:])).view(-1, num_beams)
    return items, out.sequences_scores.view(-1, num_beams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved LCRec folder (default: bundled SmolLM2 + codes)")
    parser.add_argument("--semantic-ids", default="runs/rqvae/ml100k/semantic_ids.json")
    parser.add_argument("--rqvae-config", default="config/rqvae/ml100k.gin")
    parser.add_argument("--users", type=int, default=16, help="test users decoded (the first ones)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log

    interactions, catalog = load_dataset("ml-100k")
    if args.model:
        model = LCRec.from_pretrained(args.model)
    else:
        from genrec.semantic_ids import ensure_semantic_ids

        ids = ensure_semantic_ids(args.semantic_ids, args.rqvae_config, interactions)
        model = LCRec()
        model.attach(ids, init="mean", item_texts=catalog.texts())
    model = model.to(args.device).eval()
    histories = interactions.split("loo").test.histories[: args.users]
    batches = [model.prompts(histories[i:i + args.batch_size]) for i in range(0, len(histories), args.batch_size)]
    batches = [{k: v.to(args.device) for k, v in b.items()} for b in batches]

    def timed(fn):
        with torch.inference_mode():
            fn(batches[0])  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            results = [fn(b) for b in batches]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
        items = torch.cat([r[0] for r in results]).cpu()
        scores = torch.cat([r[1] for r in results]).float().cpu()
        return time.perf_counter() - start, items, scores

    t_ours, items_ours, scores_ours = timed(lambda b: model.generate(**b, num_beams=args.beams, method="beam"))
    t_proc, items_proc, _ = timed(lambda b: _hf(model, b, args.beams, prefix_fn=False))
    t_prefix, items_prefix, scores_prefix = timed(lambda b: _hf(model, b, args.beams, prefix_fn=True))
    same_rows = (items_prefix == items_ours).all(dim=1)
    print(json.dumps({
        "benchmark": "decoding", "dataset": "ml-100k", "model": args.model or "bundled:smollm2-135m-instruct",
        "device": args.device, "users": len(histories), "batch_size": args.batch_size, "beams": args.beams,
        "prompt_tokens_mean": round(float(sum(b["attention_mask"].sum() for b in batches)) / len(histories), 1),
        "code_levels": len(model.codebook_sizes), "threads": torch.get_num_threads(),
        "seconds": {"hf_prefix_fn": round(t_prefix, 2), "hf_processor": round(t_proc, 2), "ours": round(t_ours, 2)},
        "speedup": round(t_prefix / t_ours, 2), "speedup_vs_hf_processor": round(t_proc / t_ours, 2),
        "same_items": bool(same_rows.all()), "same_item_rate": float(same_rows.float().mean()),
        "same_items_hf_processor": bool((items_proc == items_ours).all()),
        "max_score_difference": float((scores_prefix - scores_ours).abs().max()),
        "valid_item_rate": float((items_ours > 0).float().mean()),
    }))


if __name__ == "__main__":
    main()
