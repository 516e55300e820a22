"""LC-Rec's three later tasks (fusionseqrec, itemsearch, preferenceobtain), the task-mix switch, and
evaluation over every seqrec template, on hand-checkable toy data shaped like ml-100k's catalogue."""

from pathlib import Path

import gin
import numpy as np
import pytest
import torch

import genrec.trainers.lcrec_trainer  # noqa: F401  (registers the configurables the configs bind)
from genrec.config import isolated_config
from genrec.data import ItemCatalog
from genrec.data.catalog import PAD
from genrec.llm import BUNDLED_LLM, load_tokenizer, tiny_causal_lm
from genrec.llm.finetune import IGNORE
from genrec.llm.intentions import item_facets, item_query, preference_text
from genrec.llm.tasks import DEFAULT_TASKS, TASKS, TEMPLATES, PromptFormat, TaskData, item_description
from genrec.llm.template_eval import average_over_templates, evaluate_over_templates, template_ids
from genrec.llm.templates import FUSION_RESPONSES

REPO = Path(__file__).resolve().parents[1]
SIX = ["seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(BUNDLED_LLM)


@pytest.fixture(scope="module")
def toy():
    """Five films with ml-100k's fields; users [1, 2, 3, 4], [5, 1] and [3]; item i's codes ``<C0_i>``."""
    catalog = ItemCatalog([PAD, "1", "2", "3", "4", "5"], {
        "title": ["", "Toy Story", "Heat", "Casablanca", "Sense and Sensibility", "Alien"],
        "year": ["", "1995", "1995", "1942", "1995", "1979"],
        "genres": ["", "Animation, Children's, Comedy", "Action, Crime, Thriller", "Drama, Romance, War",
                   "Drama, Romance", "Action, Horror, Sci-Fi"]})
    train = [np.array([1, 2, 3, 4]), np.array([5, 1]), np.array([3])]
    codes = [""] + [f"<C0_{i}>" for i in range(1, 6)]
    return catalog, train, codes


def _data(toy, tokenizer, tasks, **kwargs):
    catalog, train, codes = toy
    return TaskData(train, codes, catalog, PromptFormat(tokenizer), tasks=tasks, max_history=3, pretokenize=False,
                    **kwargs)


def _example(data, task, a, template, end=None):
    """The example of ``task`` for user ``a`` (history ending at ``end``: the last one when None) in
    ``template`` (rows are edited in place)."""
    rows = [i for i, r in enumerate(data.rows) if r[0] == TASKS.index(task) and r[1] == a and end in (None, r[2])]
    row = rows[-1]
    data.rows[row, 3] = template
    return data.example(row)


def test_fusionseqrec_goes_both_ways_between_codes_and_language(toy, tokenizer):
    data = _data(toy, tokenizer, ["fusionseqrec"])
    assert data.counts == {"fusionseqrec": 4}  # windows ending at 1, 2, 3 of user 0 and at 1 of user 1
    assert sorted(map(tuple, data.rows[:, 1:3].tolist())) == [(0, 1), (0, 2), (0, 3), (1, 1)]
    template = TEMPLATES["fusionseqrec"]
    codes, titles = "<C0_1>, <C0_2>, <C0_3>", '"Toy Story (1995)", "Heat (1995)", "Casablanca (1942)"'
    assert _example(data, "fusionseqrec", 0, 0) == (template[0].format(history=codes), "Sense and Sensibility (1995)")
    assert _example(data, "fusionseqrec", 0, 5) == (template[5].format(history=codes),
                                                     "Year: 1995. Genres: Drama, Romance.")
    instruction, answer = _example(data, "fusionseqrec", 0, 9)
    assert instruction == template[9].format(titles=titles) and answer == "<C0_4>" and "<C0_" not in instruction
    for t, response in enumerate(FUSION_RESPONSES):
        instruction, answer = _example(data, "fusionseqrec", 1, t)  # history [5] -> item 1
        assert ("<C0_5>" in instruction) is (response != "index")
        assert ('"Alien (1979)"' in instruction) is (response == "index")
        assert answer == {"title": "Toy Story (1995)", "index": "<C0_1>",
                          "description": "Year: 1995. Genres: Animation, Children's, Comedy."}[response]


def test_fusionseqrec_asks_for_a_title_when_an_item_has_nothing_to_describe(toy, tokenizer):
    catalog, train, codes = toy
    titles_only = ItemCatalog(catalog.item_ids, {"title": catalog.fields["title"]})
    assert item_description(titles_only, 4) == ""
    data = TaskData(train, codes, titles_only, PromptFormat(tokenizer), tasks=["fusionseqrec"], max_history=3,
                    pretokenize=False)
    paired = TEMPLATES["fusionseqrec"][2].format(history="<C0_1>, <C0_2>, <C0_3>")
    assert _example(data, "fusionseqrec", 0, 6) == (paired, "Sense and Sensibility")


def test_itemsearch_answers_a_query_written_from_the_target_item(toy, tokenizer):
    data = _data(toy, tokenizer, ["itemsearch"])
    assert data.counts == {"itemsearch": 2}  # users with a history before their last training item
    query = "something Drama and Romance from the 1990s with 'Sensibility' in the title"
    preference = "The user prefers Drama, Romance and War, mostly from the 1990s."  # of items 1, 2, 3
    assert item_query(data.facets, 4) == query
    for t, template in enumerate(TEMPLATES["itemsearch"]):
        instruction, answer = _example(data, "itemsearch", 0, t)
        assert answer == "<C0_4>" and (f'"{query}"' in instruction) is (t != 0)  # template 0: the preference alone
        assert (f'"{preference}"' in instruction) is (t in (0, 3, 4, 5))
        assert instruction == template.format(history="<C0_1>, <C0_2>, <C0_3>", query=query, preference=preference)
        assert ("<C0_1>, <C0_2>, <C0_3>" in instruction) is (t < 6)  # templates 6-10: the query alone
    assert _example(data, "itemsearch", 1, 7)[1] == "<C0_1>"
    assert item_query(data.facets, 1) == "something Animation and Children's from the 1990s with 'Story' in the title"


def test_preferenceobtain_summarises_tags_era_of_the_history(toy, tokenizer):
    data = _data(toy, tokenizer, ["preferenceobtain"])
    assert data.counts == {"preferenceobtain": 3}
    # user 0's last 3 items 2, 3, 4: Drama and Romance twice, then War (the most recent of the rest); 1990s 2 of 3
    instruction, answer = _example(data, "preferenceobtain", 0, 4)
    assert instruction == TEMPLATES["preferenceobtain"][4].format(history="<C0_2>, <C0_3>, <C0_4>")
    assert answer == "The user prefers Drama, Romance and War, mostly from the 1990s."
    # items 5 then 1: all tags once, the most recent first; 1970s and 1990s tie, so no era
    assert _example(data, "preferenceobtain", 1, 0)[1] == "The user prefers Animation, Children's and Comedy."
    assert _example(data, "preferenceobtain", 2, 0)[1] == ("The user prefers Drama, Romance and War, mostly from "
                                                           "the 1940s.")
    catalog = ItemCatalog([PAD, "a", "b"], {"title": ["", "Heat", "Alien"]})
    assert preference_text(item_facets(catalog), [1, 2]) == 'The user likes items such as "Heat", "Alien".'
    with pytest.raises(ValueError, match="at least one history item"):
        preference_text(item_facets(catalog), [])


def test_tags_most_items_share_are_left_out(toy):
    catalog = ItemCatalog([PAD, "a", "b", "c"], {"title": ["", "A One", "B Two", "C Three"],
                                                 "categories": ["", "Beauty, Skin", "Beauty, Hair", "Beauty|Nails"],
                                                 "brand": ["", "Acme", "Acme", "Zed"]})
    facets = item_facets(catalog)
    assert facets.tags[1:] == [("Skin",), ("Hair",), ("Nails",)] and facets.eras == ["", "", "", ""]
    assert preference_text(facets, [1, 2, 3]) == "The user prefers Nails, Hair and Skin, often by Acme."
    assert item_query(facets, 3) == "something Nails by Zed with 'Three' in the title"


def test_all_six_tasks_make_well_formed_training_pairs(toy, tokenizer):
    catalog, train, codes = toy
    fmt = PromptFormat(tokenizer)
    data = TaskData(train, codes, catalog, fmt, tasks=SIX, max_history=3, seed=4)
    assert data.counts == {"seqrec": 4, "item2index": 5, "index2item": 5, "fusionseqrec": 4, "itemsearch": 2,
                           "preferenceobtain": 3}
    for i in range(len(data)):
        instruction, response = data.example(i)
        assert instruction.strip() and response.strip() and "{" not in instruction + response
        ids, labels = data.tokenized(i)
        assert tokenizer.decode(ids[labels != IGNORE][:-1]) == response and labels[-1] == tokenizer.eos_token_id
    # the three first tasks' examples do not move when the later ones join the mix
    first = TaskData(train, codes, catalog, fmt, tasks=DEFAULT_TASKS, max_history=3, seed=4, pretokenize=False)
    assert np.array_equal(first.rows, data.rows[: len(first)])


def test_the_task_mix_is_a_gin_switch_and_an_unknown_task_is_named(toy, tokenizer, monkeypatch):
    catalog, train, codes = toy
    monkeypatch.chdir(REPO)
    with isolated_config([], ['TaskData.tasks = ["preferenceobtain", "index2item"]', "TaskData.pretokenize = False"]):
        data = TaskData(train, codes, catalog, PromptFormat(tokenizer))
    assert data.counts == {"index2item": 5, "preferenceobtain": 3}
    with isolated_config(["config/lcrec/ml100k/lcrec.gin"]):
        assert gin.query_parameter("TaskData.tasks") == SIX
        assert gin.query_parameter("train_lcrec.test_templates") == "all"
    with isolated_config(["config/lcrec/ml100k/lcrec_debug.gin"]):  # the Quickstart keeps the first three
        assert gin.query_parameter("TaskData.tasks") == list(DEFAULT_TASKS)
        assert gin.query_parameter("train_lcrec.test_templates") == "first"
    default = TaskData(train, codes, catalog, PromptFormat(tokenizer), pretokenize=False)
    assert default.counts.keys() == set(DEFAULT_TASKS)
    with pytest.raises(ValueError, match=r"unknown or no LC-Rec tasks .*\(unknown: 'fusion'\); TaskData.tasks takes "
                                         r"any of seqrec, item2index, index2item, fusionseqrec, itemsearch, "
                                         r"preferenceobtain"):
        TaskData(train, codes, catalog, PromptFormat(tokenizer), tasks=["seqrec", "fusion"])
    with pytest.raises(ValueError, match=r"\(the list is empty\)"):
        TaskData(train, codes, catalog, PromptFormat(tokenizer), tasks=[])


def test_template_choices():
    assert template_ids("all", 8) == list(range(8)) and template_ids("first", 8) == [0]
    assert template_ids([3, 0], 8) == [3, 0] and template_ids(5, 8) == [5]
    for bad in ("every", [], [8], [1, 1], [True]):
        with pytest.raises(ValueError, match="train_lcrec.test_templates"):
            template_ids(bad, 8, "train_lcrec.test_templates")


def test_averages_over_templates_by_hand():
    per = {0: {"ndcg@10": 0.2, "recall@10": 0.5, "valid_item_rate": 1.0},
           3: {"ndcg@10": 0.4, "recall@10": 0.0, "valid_item_rate": 1.0}}
    out = average_over_templates(per)
    assert out["ndcg@10"] == pytest.approx(0.3) and out["recall@10"] == 0.25 and out["valid_item_rate"] == 1.0
    assert out["templates"] == {"0": per[0], "3": per[3]}
    assert out["template_min"] == {"ndcg@10": 0.2, "recall@10": 0.0, "valid_item_rate": 1.0}
    assert out["template_max"] == {"ndcg@10": 0.4, "recall@10": 0.5, "valid_item_rate": 1.0}
    with pytest.raises(ValueError, match="at least one template"):
        average_over_templates({})


def test_all_template_evaluation_of_a_real_model_averages_each_templates_metrics(tmp_path):
    """A tiny random LC-Rec on 12 ml-100k test users: each template's prompts reach the model, and the
    reported metrics are the mean of the metrics that evaluating each template alone gives."""
    from genrec.models import LCRec
    from genrec.semantic_ids import SemanticIDs
    from genrec.training import experiment

    exp = experiment(dataset="ml-100k", eval_rows=12)
    sizes = [8, 8, 32]
    flat = np.random.default_rng(0).permutation(np.prod(sizes))[: exp.num_items]
    ids = SemanticIDs.from_codes(np.stack(np.unravel_index(flat, sizes), axis=1), sizes, exp.interactions)
    torch.manual_seed(0)
    model = LCRec(pretrained_path=str(tiny_causal_lm(tmp_path / "tiny", seed=3)), num_beams=20)
    model.attach(ids)
    model.eval()
    history = [np.array([1, 2, 3])]
    prompts = {}
    for t in (0, 5):
        model.prompt_template = t
        prompts[t] = model.tokenizer.decode(model.prompts(history)["input_ids"][0])
        assert TEMPLATES["seqrec"][t].split("{history}")[0] in prompts[t]
    assert prompts[0] != prompts[5]
    model.prompt_template = 0
    plain = exp.evaluate_model()
    seen = []
    metrics = evaluate_over_templates(plain, {"test": [0, 2, 5]}, on_template=lambda w, t, p: seen.append((w, t, p)))(
        model, "test", None)
    assert seen == [("test", 0, 0), ("test", 2, 1), ("test", 5, 2)] and model.prompt_template == 0
    alone = {}
    for t in (0, 2, 5):
        model.prompt_template = t
        alone[t] = plain(model, "test", None)
    model.prompt_template = 0
    assert metrics["templates"] == {str(t): alone[t] for t in alone}
    for name in ("recall@20", "ndcg@20", "valid_item_rate"):
        assert metrics[name] == pytest.approx(sum(alone[t][name] for t in alone) / 3)
    assert metrics["valid_item_rate"] == 1.0
    first = evaluate_over_templates(plain, {"test": [0]})(model, "test", None)
    assert first == alone[0]  # one template: its metrics, unchanged
