"""Train and evaluate RecLM-gen SFT: an LLM fine-tuned to answer with a list of titles (optionally RecLM-cgen spans).

    python genrec/trainers/reclm_trainer.py config/reclm/ml100k/sft_debug.gin [--gin "fit.max_steps = 50"]

Steps: the LLM (bundled SmolLM2 by default) gains ``<SOI>``/``<EOI>`` (``RecLM.span_tokens``) and the
catalogue's titles (:func:`~genrec.decoding.title_trie.catalogue_titles`) -> the teacher: a saved
genrec SASRec (``teacher`` = its ``model/`` folder, e.g. from ``config/sasrec/ml100k.gin``) or, when
``teacher = "popularity"`` or the folder does not exist and ``teacher_fallback`` is set, the
training-set popularity ranking (recorded in ``metrics.json`` as ``teacher``) -> RecLM-gen's
teacher-distilled examples (:class:`~genrec.llm.reclm_tasks.RecLMData`) -> optional LoRA ->
fine-tuning by the shared loop (scope-mask loss with ``RecLM.scope_mask``) -> evaluation of valid
(model selection) and test by :func:`~genrec.evaluation.reclm_eval.evaluate_answers`: full-ranking
Recall/NDCG/MRR of the answer's items plus NonExistRate, RepeatRate, InHistoryRate, CorrectCount
and the reward -> ``<run dir>/model/`` (``RecLM.save_pretrained``) and, with ``control_rows``, the
control-task metrics of the best model on test (``metrics.json`` ``controls``).
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
from genrec.decoding.title_trie import catalogue_titles
from genrec.evaluation.reclm_eval import evaluate_answers, evaluate_controls
from genrec.io import atomic_write_text
from genrec.llm.lora import lora_settings
from genrec.llm.reclm_tasks import RecLMData, category_items
from genrec.llm.tasks import item_title
from genrec.models.popularity import MostPopular
from genrec.models.reclm import RecLM
from genrec.models.sasrec import SASRec
from genrec.progress import announce
from genrec.training import experiment, fit, seed_everything


def load_teacher(teacher: str, train_sequences, num_items: int, fallback: bool):
    """``(recommender, description)``: a saved SASRec folder, or ``"popularity"``.

    A missing folder is an error unless ``fallback``: then popularity, said in the description.
    """
    if teacher == "popularity":
        return MostPopular(train_sequences, num_items), "popularity"
    folder = Path(teacher)
    if folder.is_dir():
        model = SASRec.from_pretrained(folder).eval()
        if model.num_items != num_items:
            raise ValueError(f"the teacher {folder} scores {model.num_items} items but the dataset has {num_items}; "
                             "train the teacher on the same dataset (genrec/trainers/sasrec_trainer.py)")
        return model, f"sasrec:{folder}"
    if not fallback:
        raise FileNotFoundError(f"the RecLM teacher {folder} does not exist; train it first (python "
                                "genrec/trainers/sasrec_trainer.py config/sasrec/ml100k.gin), set train_reclm.teacher "
                                "= 'popularity', or set train_reclm.teacher_fallback = True")
    announce("RecLM", f"teacher {folder} not found: falling back to training-set popularity")
    return MostPopular(train_sequences, num_items), f"popularity (fallback: {folder} not found)"


@gin.configurable
def train_reclm(run_dir: str = "runs/reclm", seed: int = 2020, teacher: str = "runs/sasrec/ml100k/model",
                teacher_fallback: bool = False, lora: bool = False, control_rows: int = 0) -> dict:
    """Fine-tunes RecLM on RecLM-gen's tasks and evaluates it; returns the metrics of the run.

    Args:
        run_dir: the run folder.
        seed: seeds initialisation, example drawing and batch order.
        teacher: a saved SASRec folder (``SASRec.save_pretrained``) or ``"popularity"``.
        teacher_fallback: use popularity when the ``teacher`` folder does not exist (else an error).
        lora: train LoRA adapters (and the span token rows) instead of every weight.
        control_rows: test rows per control task evaluated after training (0: none).
    """
    exp = experiment()
    seed_everything(seed)
    model = RecLM()
    raw = [item_title(exp.catalog, i) if i else "" for i in range(len(exp.catalog.item_ids))]
    titles = catalogue_titles(raw, model.tokenizer)
    model.attach(titles, exp.interactions.item_ids)
    if lora:
        model.enable_lora(lora_settings())
    teacher_model, teacher_name = load_teacher(teacher, exp.split.train, exp.num_items, teacher_fallback)
    genres = exp.catalog.fields.get("genres", [""] * len(titles))
    data = RecLMData(exp.split.train, titles, genres, model.format, teacher_model,
                     span_tokens=model.settings["span_tokens"], noun=model.settings["noun"], seed=seed)
    announce("RecLM", f"training examples {data.counts}, teacher {teacher_name}")
    info = {**exp.info, "teacher": teacher_name, "task_examples": data.counts,
            "span_tokens": model.settings["span_tokens"], "constrained": model.settings["constrained"],
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def evaluate(model, which, accelerator):
        return evaluate_answers(model, exp.evaluators[which], teacher_model, accelerator=accelerator)

    metrics = fit(model, data, evaluate, run_dir=run_dir, info=info, seed=seed, collate_fn=RecLMData.collate)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")
        if control_rows:
            metrics["controls"] = evaluate_controls(model.eval(), exp.evaluators["test"], category_items(genres),
                                                    rows=control_rows, seed=seed)
            atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    metrics = run(train_reclm, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"], "controls": metrics.get("controls")},
                     indent=2))
