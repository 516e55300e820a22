"""Train and evaluate LC-Rec: an LLM fine-tuned to generate items' semantic-ID tokens.

    python genrec/trainers/lcrec_trainer.py config/lcrec/ml100k/lcrec_debug.gin [--gin "fit.max_steps = 50"]

Steps: the semantic IDs the config names (built first, in process, with the RQ-VAE config it names
when the file does not exist yet: :func:`genrec.semantic_ids.ensure_semantic_ids`) -> the LLM
(bundled SmolLM2 by default) gains one token per code (:meth:`LCRec.attach`) -> optional LoRA ->
instruction tuning on the task mix ``TaskData.tasks`` names (LC-Rec's six: seqrec, item2index,
index2item, fusionseqrec, itemsearch, preferenceobtain; :mod:`genrec.llm.tasks`) by the shared loop
-> trie-constrained beam search over every item, full-ranking metrics on valid (model selection) and
test -> ``<run dir>/model/`` (``LCRec.save_pretrained``). ``metrics.json`` also holds
``valid_item_rate`` (share of returned entries that are catalogue items), ``duplicate_rate``
(share of entries repeating an earlier entry of the same list) and ``throughput`` (real tokens/s,
model FLOP/s and MFU of the training: :mod:`genrec.training.measures`).

Prompt templates (:mod:`genrec.llm.template_eval`): ``train_lcrec.valid_templates`` and
``test_templates`` take ``"first"`` (the seqrec template 0 alone), ``"all"`` (every seqrec template,
the metrics averaged over them, as LC-Rec reports its test results, with each template's metrics
under ``templates`` and their ``template_min`` / ``template_max``) or a list of template indices.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin

from genrec.config import run
from genrec.data import SPLITS
from genrec.llm.flops import fine_tuning_flops
from genrec.llm.lora import lora_settings
from genrec.llm.tasks import TEMPLATES, TaskData
from genrec.llm.template_eval import evaluate_over_templates, template_ids
from genrec.models.lcrec import LCRec
from genrec.progress import announce
from genrec.semantic_ids import ensure_semantic_ids
from genrec.training import experiment, fit, seed_everything


@gin.configurable
def train_lcrec(run_dir: str = "runs/lcrec", seed: int = 2020,
                semantic_ids: str = "runs/rqvae/ml100k/semantic_ids.json",
                rqvae_config: str | None = "config/rqvae/ml100k.gin", lora: bool = False,
                code_init: str = "mean", valid_templates: str | int | list[int] = "first",
                test_templates: str | int | list[int] = "first") -> dict:
    """Fine-tunes LC-Rec and evaluates it by constrained generation; returns the metrics of the run.

    Args:
        run_dir: the run folder.
        seed: seeds LoRA initialisation, template choice and batch order.
        semantic_ids: the ``semantic_ids.json`` to train on.
        rqvae_config: the RQ-VAE gin config that builds ``semantic_ids`` (into its folder) when the
            file does not exist; ``None``: require the file.
        lora: train LoRA adapters (plus the new token rows) instead of every weight.
        code_init: ``mean`` (new token rows = mean embedding of their items' text tokens) or ``default``.
        valid_templates: seqrec templates of the validation prompts: ``"first"``, ``"all"`` (metrics
            averaged over them) or a list of indices (module docstring).
        test_templates: the same for the test prompts (LC-Rec reports ``"all"``).
    """
    count = len(TEMPLATES["seqrec"])
    templates = {"valid": template_ids(valid_templates, count, "train_lcrec.valid_templates"),
                 "test": template_ids(test_templates, count, "train_lcrec.test_templates")}
    exp = experiment()
    ids = ensure_semantic_ids(semantic_ids, rqvae_config, exp.interactions)
    seed_everything(seed)  # after a possible build, so the model starts the same either way
    model = LCRec()
    model.attach(ids, init=code_init, item_texts=exp.catalog.texts(require_text=True))
    if lora:
        model.enable_lora(lora_settings())
    data = TaskData(exp.split.train, model.item_code_strings, exp.catalog, model.format, seed=seed)
    announce("LC-Rec", f"training examples {data.counts}")
    lengths = data.lengths()
    info = {**exp.info, "semantic_ids": str(semantic_ids), "semantic_ids_fingerprint": ids.fingerprint,
            "codebook_sizes": ids.codebook_sizes, "task_examples": data.counts, "prompt_templates": templates,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "work_per_epoch": {"tokens": int(lengths.sum()),  # metrics.json: throughput (tokens/s, MFU)
                               "model_flops": fine_tuning_flops(model.llm, lengths, int(data.label_counts().sum()))}}
    evaluate = evaluate_over_templates(exp.evaluate_model(), templates, on_template=lambda which, template, position:
                                       announce("LC-Rec", f"{which} prompt template {template} "
                                                f"({position + 1} of {len(templates[which])})"))
    metrics = fit(model, data, evaluate, run_dir=run_dir, info=info, seed=seed, collate_fn=TaskData.collate)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")
    return metrics


if __name__ == "__main__":
    metrics = run(train_lcrec, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
