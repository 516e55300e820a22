"""Knowledge Plugin (DOKE): providers on a toy catalogue, the prompt template, packed candidate scoring,
mapping a generated answer back to candidates, the 20-candidate lists. A tiny random Llama with
SmolLM2's tokenizer stands in for the LLM."""

import json

import gin
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from genrec.config import parse_gin
from genrec.data import ItemCatalog, load_dataset
from genrec.knowledge import (AttributeKnowledge, CooccurrenceKnowledge, EmbeddingNeighbours, KnowledgePlugin,
                              LLMReranker, PromptTemplate, RecommenderKnowledge, candidate_lists)
from genrec.knowledge.plugin import make_providers
from genrec.llm import load_tokenizer, tiny_causal_lm
from genrec.models.popularity import MostPopular
from genrec.models.sasrec import SASRec

CATALOG = ItemCatalog(
    item_ids=["[PAD]", "10", "20", "30", "40", "50"],
    fields={"title": ["", "Alpha Story", "Beta Night", "Gamma Ray", "Delta Force", "Epsilon Dreams"],
            "year": ["", "1990", "1991", "1992", "1993", "1994"],
            "genres": ["", "Drama, Comedy", "Drama", "Horror", "Action, Drama", "Comedy"]})
SEQUENCES = [np.array([1, 2, 3]), np.array([1, 2]), np.array([4, 5]), np.array([2, 4])]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tiny_causal_lm(tmp_path_factory.mktemp("knowledge-llm") / "llama", "llama", seed=3)
    llm = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    return llm, load_tokenizer(str(folder))


def test_cooccurrence_counts_users_and_normalises_like_doke():
    provider = CooccurrenceKnowledge(SEQUENCES, 5, CATALOG, top_k=2)
    # co(1, 2) = 2 users, count(1) = 2, count(2) = 3; co(1, 4) = 0; co(2, 4) = 1, count(4) = 2
    assert provider.score([1], [2, 4]) == pytest.approx(np.array([[2 / np.sqrt(6), 0.0]]))
    assert provider.score([2], [4]) == pytest.approx(np.array([[1 / np.sqrt(6)]]))
    facts = provider.facts(np.array([1, 3]), [2, 5])
    assert facts == ["People who watched Alpha Story (1990), Gamma Ray (1992) also watched Beta Night (1991)."]


def test_embedding_neighbours_name_the_most_similar_history_items():
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 0.1], [0.1, 1], [-1, 0]], dtype=np.float32)
    provider = EmbeddingNeighbours(vectors, CATALOG, top_k=1, min_similarity=0.5)
    facts = provider.facts(np.array([1, 2]), [3, 4, 5])
    assert facts == ["Gamma Ray (1992) is similar to Alpha Story (1990).",
                     "Delta Force (1993) is similar to Beta Night (1991)."]  # item 5 points away from both
    with pytest.raises(ValueError, match="one vector per item"):
        EmbeddingNeighbours(vectors[:3], CATALOG)


def test_recommender_knowledge_orders_candidates_by_the_model():
    model = MostPopular(SEQUENCES, 5)  # counts: item 2: 3, items 1, 4: 2, items 3, 5: 1
    provider = RecommenderKnowledge(model, CATALOG, top_k=2)
    assert provider.order(np.array([3]), [5, 4, 2]).tolist() == [2, 4, 5]
    assert provider.facts(np.array([3]), [5, 4, 2]) == [
        "A recommender trained on many users ranks these candidates highest: Beta Night (1991), Delta Force (1993)."]


def test_attribute_knowledge_profiles_the_history_and_describes_candidates():
    provider = AttributeKnowledge(CATALOG, fields=("year", "genres"), profile_top=2)
    assert provider.profile(np.array([1, 2, 4])) == [("Drama", 3), ("Action", 1)]
    facts = provider.facts(np.array([1, 2, 4]), [3])
    assert facts[0] == "Of the user's 3 movies, the most frequent genres are Drama (3), Action (1)."
    assert facts[1] == "Gamma Ray (1992): year: 1992; genres: Horror."


def test_template_composes_segments_in_order_and_drops_empty_knowledge():
    template = PromptTemplate(segments=["history", "knowledge", "candidates"],
                              texts={"history": "H: {history}", "knowledge": "K: {knowledge}",
                                     "candidates": "C{count}: {candidates}"}, separator=" | ", item_separator=", ")
    assert template.render(["a", "b"], ["c"], ["fact one", "fact two"]) == "H: a, b | K: fact one\nfact two | C1: c"
    assert template.render(["a", "b"], ["c"]) == "H: a, b | C1: c"
    with pytest.raises(ValueError, match="unknown fields"):
        PromptTemplate(segments=["x"], texts={"x": "{user}"})
    with pytest.raises(ValueError, match="without text"):
        PromptTemplate(segments=["nothing"])


def test_packed_likelihoods_equal_scoring_each_candidate_alone(tiny):
    llm, tokenizer = tiny
    reranker = LLMReranker(llm, tokenizer, length_norm="sum")
    names = ["Alpha Story (1990)", "Beta Night", "Gamma Ray (1992) and more words"]
    packed = reranker.likelihoods("The user watched Delta Force.", names)
    prompt = reranker.prompt_ids("The user watched Delta Force.")
    for name, score in zip(names, packed):
        cont = tokenizer(name, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            log_probs = torch.log_softmax(llm(input_ids=ids).logits[0].float(), -1)
        alone = sum(float(log_probs[len(prompt) - 1 + k, t]) for k, t in enumerate(cont))
        assert score == pytest.approx(alone, abs=1e-3)


def test_plugin_ranks_a_permutation_with_and_without_knowledge(tiny):
    llm, tokenizer = tiny
    providers = [CooccurrenceKnowledge(SEQUENCES, 5, CATALOG), AttributeKnowledge(CATALOG)]
    plugin = KnowledgePlugin(providers, LLMReranker(llm, tokenizer), CATALOG, template=PromptTemplate())
    history, candidates = np.array([1, 3]), np.array([5, 2, 4])
    with_k, without = plugin.prompt(history, candidates), plugin.prompt(history, candidates, use_knowledge=False)
    assert "also watched Beta Night" in with_k and "also watched" not in without
    assert "Useful knowledge" in with_k and "Useful knowledge" not in without
    assert [part for part in with_k.split("\n\n") if part in without.split("\n\n")] == without.split("\n\n")
    for flag in (True, False):
        assert sorted(plugin.rank(history, candidates, flag).tolist()) == [2, 4, 5]


def test_generated_answer_maps_back_to_candidates_in_order(tiny):
    llm, tokenizer = tiny
    plugin = KnowledgePlugin([], LLMReranker(llm, tokenizer, scoring="generation"), CATALOG, template=PromptTemplate())
    answer = "1. Delta Force\n2. Some Movie Nobody Knows\n3. alpha story (1990)\n4. Delta Force"
    assert plugin.order_from_text(answer, np.array([1, 2, 4])).tolist() == [4, 1, 2]
    assert sorted(plugin.rank(np.array([1]), np.array([2, 3, 4])).tolist()) == [2, 3, 4]


def test_candidate_lists_hold_the_target_and_unseen_negatives_and_are_seeded():
    histories = [np.array([1, 2]), np.array([3])]
    targets = np.array([3, 4])
    lists = candidate_lists(5, histories, targets, size=3, seed=7)
    assert lists.shape == (2, 3)
    for row, history, target in zip(lists, histories, targets):
        assert target in row and len(set(row.tolist())) == 3 and not set(row.tolist()) & set(history.tolist())
    assert (candidate_lists(5, histories, targets, size=3, seed=7) == lists).all()


def test_make_providers_checks_names_and_needs_a_recommender():
    with pytest.raises(ValueError, match="unknown providers"):
        make_providers(SEQUENCES, 5, CATALOG, names=["gossip"])
    with pytest.raises(ValueError, match="no trained recommender"):
        make_providers(SEQUENCES, 5, CATALOG, names=["recommender"])
    built = make_providers(SEQUENCES, 5, CATALOG, recommender=MostPopular(SEQUENCES, 5),
                           names=["attributes", "recommender", "cooccurrence"])
    assert [p.name for p in built] == ["attributes", "recommender", "cooccurrence"]


def test_the_evaluation_entry_runs_on_ml100k_and_writes_its_metrics(tiny, tmp_path):
    from genrec.trainers.knowledge_trainer import evaluate_knowledge

    interactions, _ = load_dataset("ml-100k")
    torch.manual_seed(0)
    target = SASRec(num_items=interactions.num_items, max_history=10, hidden_size=8, num_layers=1, num_heads=1,
                    inner_size=16)
    target.set_item_ids(interactions.item_ids)
    target.save_pretrained(tmp_path / "target" / "model")
    llm_folder = tiny_causal_lm(tmp_path / "llm", "llama", seed=3)
    parse_gin([], ["make_providers.names = ['cooccurrence', 'recommender', 'attributes']"])
    try:
        result = evaluate_knowledge(run_dir=str(tmp_path / "run"), users=3, target_run=str(tmp_path / "target"),
                                    llm=str(llm_folder))
    finally:
        gin.clear_config()
    assert result["users"] == 3 and result["providers"] == ["cooccurrence", "recommender", "attributes"]
    for name in ("with_knowledge", "without_knowledge", "sasrec_alone"):
        assert 0 <= result[name]["ndcg@10"] <= 1
    assert result["mean_prompt_tokens"]["with_knowledge"] > result["mean_prompt_tokens"]["without_knowledge"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["users"] == 3
