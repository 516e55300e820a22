"""InteRecAgent: the sqlite item table, tools over the candidate buffer, memory, the JSON plan grammar
(with a random tiny LLM), the planners, the simulated user and the terminal chat."""

import io
import json
import random

import numpy as np
import pytest
import torch

from genrec.agent.agent import InteRecAgent
from genrec.agent.grammar import PlanGrammar, PlanLogitsProcessor, parse_plan
from genrec.agent.items import ItemTable
from genrec.agent.memory import Memory
from genrec.agent.planner import LLMPlanner, RulePlanner
from genrec.agent.simulator import hints, simulate
from genrec.agent.tools import ToolBox
from genrec.data import load_dataset
from genrec.models import MostPopular


@pytest.fixture(scope="module")
def data():
    interactions, catalog = load_dataset("ml-100k")
    return interactions, catalog, interactions.split("loo")


@pytest.fixture(scope="module")
def tools(data, tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from genrec.llm.pretrained import resolve_llm
    from genrec.retrieval.encoder import RetrievalEncoder
    from genrec.retrieval.service import ItemRetriever

    interactions, catalog, split = data
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_llm("bundled:all-minilm-l6-v2"))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    retriever = ItemRetriever(RetrievalEncoder(model=str(folder)), catalog, cache=False)
    return ToolBox(ItemTable(catalog), ranker=MostPopular(split.train, interactions.num_items), retriever=retriever)


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from genrec.llm import load_causal_lm, tiny_causal_lm

    return load_causal_lm(str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), seed=5)))


def test_item_table_filters_are_sql_and_never_add(tools):
    table = tools.table
    assert table.db.execute("SELECT count(*) FROM items").fetchone()[0] == 1682
    rng = random.Random(0)
    for _ in range(20):
        candidates = rng.sample(range(1, 1683), 200)
        for kept in (table.filter_genre(candidates, rng.choice(table.genres)),
                     table.filter_decade(candidates, rng.choice(table.decades)),
                     table.filter_title(candidates, rng.choice(["the", "star", "%", "_"]))):
            assert set(kept) <= set(candidates) and kept == [i for i in candidates if i in set(kept)]
    assert table.filter_title(list(range(1, 1683)), "%") == []  # LIKE wildcards are escaped
    comedies = table.filter_genre(list(range(1, 1683)), "Comedy")
    assert len(comedies) == 505 and all("Comedy" in table.describe(i) for i in comedies)
    assert table.title(table.lookup("star wars")[0]) == "Star Wars"


def test_every_plan_only_narrows_the_buffer(tools):
    specs = tools.specs()
    assert set(specs) == {"genre", "decade", "title", "search", "like", "rank", "lookup"}
    rng = random.Random(1)
    memory = Memory(history=[1, 2, 3])
    for _ in range(30):
        previous = set(tools.new_buffer().items)
        buffer = tools.new_buffer()
        for _ in range(3):
            tool = rng.choice(list(specs))
            arg = rng.choice(specs[tool]) if specs[tool] else rng.choice(["Star Wars", "love", "zzz", ""])
            getattr(tools, f"tool_{tool}")(buffer, arg, memory)
            assert set(buffer.items) <= previous and len(buffer.items) == len(set(buffer.items))
            previous = set(buffer.items)


def test_unwanted_items_are_never_returned(tools):
    memory = Memory(history=[50])  # 50 = Star Wars
    agent = InteRecAgent(tools, RulePlanner(tools.specs()), memory, k=10)
    first = agent.chat("a Sci-Fi movie from the 1970s")
    assert first.items and 50 not in first.items
    disliked = first.items[0]
    turn = agent.chat(f"I didn't like {tools.table.title(disliked)}. a Sci-Fi movie")
    assert disliked in memory.disliked
    assert not set(turn.items) & (memory.disliked | set(first.items) | {50})
    for _ in range(5):
        assert not set(agent.chat("a Sci-Fi movie").items) & memory.disliked


def test_grammar_yields_a_parseable_plan_from_random_choices(tiny_llm):
    _, tokenizer = tiny_llm
    specs = {"genre": ["Comedy", "Drama", "Sci-Fi"], "search": None, "rank": ["history"]}
    grammar = PlanGrammar(tokenizer, specs, max_steps=3, max_text_tokens=5)
    rng = random.Random(0)
    for _ in range(100):
        state, tokens = grammar.replay([]), []
        while state.stage != "done":
            token = rng.choice(grammar.allowed(state).nonzero().flatten().tolist())
            tokens.append(token)
            state = grammar.advance(state, token)
        assert len(tokens) <= grammar.max_tokens
        plan = parse_plan(tokenizer.decode(tokens[:-1]), specs)
        assert 1 <= len(plan) <= 3
    with pytest.raises(ValueError, match="leaves the plan grammar"):
        grammar.advance(grammar.replay([]), tokenizer.encode("x", add_special_tokens=False)[0])
    with pytest.raises(ValueError, match="unknown tool"):
        parse_plan('[{"tool": "drop_table", "arg": ""}]', specs)


def test_llm_planner_always_plans_even_with_a_random_tiny_model(tiny_llm, tools):
    llm, tokenizer = tiny_llm
    planner = LLMPlanner(llm, tokenizer, tools.specs(), max_steps=3, max_text_tokens=4)
    for request in ["a funny movie from the 90s", "something like Star Wars", "\"quotes\" and \\ slashes", "x" * 50]:
        plan = planner.plan(request)
        assert plan == parse_plan(planner.last_text, tools.specs()) and json.loads(planner.last_text)
        tools.run(plan, Memory(history=[1]))
    # the same constraint inside transformers' generate
    ids = tokenizer(planner.prompt("a drama"), return_tensors="pt").input_ids
    processor = PlanLogitsProcessor(planner.grammar, ids.shape[1])
    out = llm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, max_new_tokens=200,
                       logits_processor=[processor], pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    generated = out[0, ids.shape[1]:].tolist()
    assert generated[-1] == tokenizer.eos_token_id
    parse_plan(tokenizer.decode(generated[:-1]), tools.specs())


def test_rule_planner_and_memory_request(tools):
    planner = RulePlanner(tools.specs())
    assert planner.plan("a funny movie from the 90s") == [("genre", "Comedy"), ("decade", "1990s"), ("rank", "history")]
    assert ("like", "Star Wars") in planner.plan("something like Star Wars")
    memory = Memory(turns=[("a Drama movie", "...")], context_turns=2)
    assert memory.request("It came out in 1995") == "a Drama movie. It came out in 1995."


def test_simulated_user_agent_beats_ranking_alone(tools, data):
    interactions, catalog, split = data
    rows = np.arange(0, 943, 19)
    histories = [split.test.histories[i] for i in rows]
    targets = [int(split.test.targets[i]) for i in rows]
    assert hints(tools.table, 50, random.Random(0))[0].startswith("I'm looking for a")

    def agent_session(history):
        agent = InteRecAgent(tools, RulePlanner(tools.specs()), Memory(history=history.tolist()), k=10)
        return lambda text: agent.chat(text).items

    def ranking_session(history):
        memory = Memory(history=history.tolist())

        def reply(text):
            buffer = tools.new_buffer()
            tools.tool_rank(buffer, "history", memory)
            items = tools.answer(buffer, memory, 10)
            memory.shown.update(items)
            return items
        return reply

    agent = simulate(agent_session, tools.table, histories, targets, max_turns=4)
    alone = simulate(ranking_session, tools.table, histories, targets, max_turns=4)
    assert agent["users"] == len(rows) and 1 <= agent["avg_turns"] <= 4
    assert agent["hit"] > alone["hit"]


def test_terminal_chat(monkeypatch, capsys):
    from genrec.agent.__main__ import main

    script = io.StringIO("a Western from the 1960s\n/plan\n/memory\n/quit\n")
    assert main(["--planner", "rules", "--retriever", "none", "--user", "196"], stdin=script) == 0
    out = capsys.readouterr().out
    assert "('genre', 'Western')" in out and "1. " in out and "disliked: []" in out
    assert main(["--ranker", "runs/missing"], stdin=io.StringIO("")) == 2
