"""Evaluation over several prompt templates, as LC-Rec reports it (``test.py --test_prompt_ids all``).

A prompted recommender's metrics depend on the wording of its prompt. LC-Rec evaluates the test
users once per ``seqrec`` template and reports the mean over templates (with the minimum and the
maximum); the first template alone is its validation prompt. :func:`evaluate_over_templates` wraps
the ``evaluate(model, which, accelerator)`` callable of :func:`genrec.training.fit`: for each
template named for ``valid`` or ``test`` it sets ``model.prompt_template`` (read by
:meth:`genrec.models.LCRec.prompts`), evaluates, and restores it. With one template the metrics are
that template's, as before; with several (:func:`average_over_templates`)::

    {"ndcg@10": mean over templates, ..., "valid_item_rate": mean, ...,
     "templates": {"0": {...}, "1": {...}, ...},        # each template's own metrics
     "template_min": {"ndcg@10": ..., ...}, "template_max": {"ndcg@10": ..., ...}}

so ``metrics.json`` holds the per-template metrics, and model selection (``fit.metric``) and
reports use the mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["average_over_templates", "evaluate_over_templates", "template_ids"]

Evaluate = Callable[[Any, str, Any], dict[str, Any]]


def template_ids(choice: str | int | Sequence[int], count: int, name: str = "templates") -> list[int]:
    """The template indices a gin value names: ``"all"`` (0..count-1), ``"first"`` ([0]), an index or a list.

    Args:
        choice: ``"all"``, ``"first"``, an int or a list of ints.
        count: how many templates there are.
        name: the binding, for the error message.

    Raises:
        ValueError: an unknown word, an empty list, a repeated index or one outside 0..count-1.
    """
    if isinstance(choice, str):
        if choice not in ("all", "first"):
            raise ValueError(f"{name} = {choice!r} is not a template choice; use \"all\", \"first\" or a list of "
                             f"template indices in 0..{count - 1}")
        return list(range(count)) if choice == "all" else [0]
    ids = [choice] if isinstance(choice, int) else list(choice)
    bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < count]
    if not ids or bad or len(set(ids)) != len(ids):
        raise ValueError(f"{name} = {choice!r} does not name distinct templates; use \"all\", \"first\" or distinct "
                         f"indices in 0..{count - 1}")
    return ids


def average_over_templates(per_template: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The mean of every number over templates, plus ``templates``, ``template_min`` and ``template_max``.

    Args:
        per_template: template index -> that template's metrics (numbers; nested dicts, such as
            another protocol's block, are kept per template only).

    Returns:
        ``{metric: mean, ..., "templates": {"<index>": metrics}, "template_min": {...}, "template_max": {...}}``;
        a metric missing from some template is averaged over the templates that have it.
    """
    if not per_template:
        raise ValueError("average_over_templates needs the metrics of at least one template")
    names = list(dict.fromkeys(key for metrics in per_template.values() for key, value in metrics.items()
                               if isinstance(value, (int, float)) and not isinstance(value, bool)))
    values = {name: [float(m[name]) for m in per_template.values() if name in m] for name in names}
    out: dict[str, Any] = {name: sum(v) / len(v) for name, v in values.items()}
    out["templates"] = {str(t): dict(metrics) for t, metrics in per_template.items()}
    out["template_min"] = {name: min(v) for name, v in values.items()}
    out["template_max"] = {name: max(v) for name, v in values.items()}
    return out


def evaluate_over_templates(evaluate: Evaluate, templates: Mapping[str, Sequence[int]],
                            on_template: Callable[[str, int, int], None] | None = None) -> Evaluate:
    """An ``evaluate(model, which, accelerator)`` that runs ``evaluate`` once per template of ``which``.

    Args:
        evaluate: the plain evaluate callable (e.g. ``Experiment.evaluate_model()``).
        templates: ``"valid"`` / ``"test"`` -> template indices (:func:`template_ids`); a set not
            named uses template 0.
        on_template: called as ``on_template(which, template, position)`` before each of several
            templates (progress messages).
    """
    def run(model, which, accelerator):
        ids = list(templates.get(which, [0]))
        previous, per_template = model.prompt_template, {}
        try:
            for position, template in enumerate(ids):
                if on_template is not None and len(ids) > 1:
                    on_template(which, template, position)
                model.prompt_template = template
                per_template[template] = evaluate(model, which, accelerator)
        finally:
            model.prompt_template = previous
        return per_template[ids[0]] if len(ids) == 1 else average_over_templates(per_template)

    return run
