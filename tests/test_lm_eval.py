"""RecLM-eval: metric definitions by hand, tasks, choice parsing, random sanity, cache resume, backends."""

import json
import math
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from genrec.data import load_dataset
from genrec.evaluation.lm_backends import BackendError, CallableBackend, HFBackend, OpenAIBackend, RandomBackend, Reply
from genrec.evaluation.lm_eval import (
    LMEvalError,
    evaluate_examples,
    evaluate_lm,
    load_answers,
    prepare_examples,
    score_answers,
)
from genrec.evaluation.lm_metrics import answer_errors, error_rates, lcs_length, list_metrics, relevance
from genrec.evaluation.lm_tasks import UnknownTaskError, build_examples, parse_choice
from genrec.lmeval import main as lmeval_main

WORDS = ["Red", "Blue", "Night", "River", "Ghost", "Winter", "Iron", "Silent", "Golden", "Last"]


def write_recai(folder, num_users, num_items=60, length=(8, 14), seed=0):
    """A RecAI folder: metadata.json (titles) + sequential_data.txt (random sequences)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.json", "w") as f:
        for i in range(1, num_items + 1):
            f.write(json.dumps({"title": f"The {WORDS[i % 10]} {WORDS[(i // 10) % 10]} Story {i:03d}"}) + "\n")
    with open(folder / "sequential_data.txt", "w") as f:
        for user in range(1, num_users + 1):
            items = rng.choice(np.arange(1, num_items + 1), size=int(rng.integers(*length)), replace=False)
            f.write(f"{user} " + " ".join(map(str, items)) + "\n")
    return f"recai:{folder}"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_dataset(write_recai(tmp_path_factory.mktemp("recai") / "small", num_users=40))


# ---- metrics, by hand ---------------------------------------------------------------------------------------

def test_list_metrics_by_hand():
    rels = [[0, 1, 0], [1], [0, 0, 0], []]  # ranks 1, 0, miss, miss
    m = list_metrics(rels, 1, ks=(1, 5))
    assert m["hit@1"] == m["recall@1"] == m["precision@1"] == m["ndcg@1"] == m["mrr@1"] == m["map@1"] == 0.25
    assert m["hit@5"] == m["recall@5"] == 0.5
    assert m["precision@5"] == pytest.approx((1 / 5 + 1 / 5) / 4)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1) / 4)
    assert m["mrr@5"] == m["map@5"] == pytest.approx((1 / 2 + 1) / 4)


def test_list_metrics_two_targets_by_hand():
    m = list_metrics([[1, 0, 1]], 2, ks=(3,))
    assert m["recall@3"] == 1.0 and m["precision@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 2) and m["mrr@3"] == 1.0
    with pytest.raises(ValueError, match="no rows"):
        list_metrics([], 1)
    with pytest.raises(ValueError, match="cut-off"):
        list_metrics([[1]], 1, ks=(0,))


def test_relevance_counts_a_repeated_target_once():
    assert relevance([4, None, 7, 7, 4], [7]) == [0, 0, 1, 0, 0]


def test_error_taxonomy_by_hand():
    flags = answer_errors([5, None, 5, 3, 9], history=[3, 4], candidates=[5, 9, 7])
    assert flags == {"not_in_catalogue": 1.0, "not_in_candidates": 1.0, "duplicate": 1.0, "in_history": 1.0,
                     "copy_error": 2.0, "copies_input": 0.0}
    clean = answer_errors([9, 5, 7], history=[3, 4], candidates=[5, 9, 7])
    assert clean == {"not_in_catalogue": 0.0, "not_in_candidates": 0.0, "duplicate": 0.0, "in_history": 0.0,
                     "copy_error": 2.0, "copies_input": 0.0}
    copied = answer_errors([5, 9, 7], history=[3, 4], candidates=[5, 9, 7])
    assert copied["copies_input"] == 1.0 and copied["copy_error"] == 3.0
    assert "not_in_candidates" not in answer_errors([1], history=[2])  # retrieval has no candidates
    rates = error_rates([flags, clean])
    assert rates["duplicate_rate"] == 0.5 and rates["copy_error"] == 2.0
    assert lcs_length([1, 2, 3, 4], [2, 4, 1]) == 2 and lcs_length([None], [None]) == 0


# ---- tasks ----------------------------------------------------------------------------------------------------

def test_ranking_examples(small):
    interactions, catalog = small
    examples, matcher, titles, _ = prepare_examples(small, "ranking", num_users=10, seed=3)
    assert len(examples) == 10
    for e in examples:
        sequence = interactions.sequences[e.user]
        assert e.target == sequence[-1] and e.history == [int(x) for x in sequence[:-1][-20:]]
        assert len(set(e.candidates)) == 20 and e.target in e.candidates
        assert not set(e.candidates) - {e.target} & set(int(x) for x in sequence)
        assert all(f"<SOI>{titles[c]}<EOI>" in e.prompt for c in e.candidates)
    # a user's example does not depend on which other users are evaluated
    one = build_examples("ranking", interactions.sequences, titles, [examples[3].user], seed=3)[0]
    assert one.candidates == examples[3].candidates and one.prompt == examples[3].prompt


def test_recai_negative_samples_are_used(tmp_path):
    dataset = write_recai(tmp_path / "neg", num_users=6, num_items=60)
    folder = tmp_path / "neg"
    lines = (folder / "sequential_data.txt").read_text().splitlines()
    with open(folder / "negative_samples.txt", "w") as f:
        for line in lines:
            f.write(line.split()[0] + " " + " ".join(str(i) for i in range(1, 41)) + "\n")
    examples, _, _, _ = prepare_examples(dataset, "ranking", num_users=None, num_candidates=10)
    interactions, _ = load_dataset(dataset)
    allowed = {interactions.item_index(str(i)) for i in range(1, 41) if str(i) in interactions.item_ids}
    for e in examples:
        assert set(e.candidates) - {e.target} <= allowed
    with open(folder / "negative_samples.txt", "a") as f:
        f.write("7\n")
    with pytest.raises(LMEvalError, match="line 7 names user '7' but no negative items"):
        prepare_examples(dataset, "ranking", num_users=None)


def test_multiple_choice_examples(small):
    interactions, _ = small
    seq, *_ = prepare_examples(small, "seq_ranking_mc", num_users=5)
    cf, *_ = prepare_examples(small, "cf_ranking_mc", num_users=5)
    for e in seq + cf:
        assert len(e.candidates) == 10 and e.target in e.candidates and "J. " in e.prompt
    for e in cf:
        assert e.target in interactions.sequences[e.user] and e.target not in e.history


def test_parse_choice(small):
    (e,), matcher, *_ = prepare_examples(small, "seq_ranking_mc", users=[0])
    title_of = lambda i: e.titles[e.candidates[i]]  # noqa: E731
    assert parse_choice("B", e) == 1 and parse_choice("(C) whatever", e) == 2
    assert parse_choice("The answer is D.", e) == 3 and parse_choice("I pick E) here", e) == 4
    assert parse_choice(f"I think {title_of(6)} fits.", e) == 6
    assert parse_choice("A great film for sure", e) is None  # the article is not option A
    assert parse_choice("", e) is None


def test_bad_inputs_are_named(small):
    with pytest.raises(UnknownTaskError, match="known tasks: retrieval, ranking"):
        evaluate_lm(RandomBackend(), small, "rating", use_cache=False)
    examples, matcher, *_ = prepare_examples(small, "ranking", num_users=3)
    examples[1].candidates = []
    with pytest.raises(LMEvalError, match="user .* empty candidate list"):
        evaluate_examples(RandomBackend(), examples, matcher)
    with pytest.raises(ValueError, match="out of range"):
        prepare_examples(small, "ranking", users=[10_000])


def test_retrieval_scoring_by_hand(small):
    (e, other), matcher, titles, _ = prepare_examples(small, "retrieval", users=[0, 1])
    words = titles[e.target].split()  # "The <w1> <w2> Story <nnn>"
    partial = f"{words[2]} Story {words[4]}"
    assert 0.6 <= matcher.best(partial)[1] < 0.8 and matcher.best(partial)[0] == e.target
    seen = titles[e.history[0]]
    answer = f"1. {seen}\n2. {partial}\n3. Zzqx Vvwy\n4. {seen}"
    result = score_answers([e, other], [Reply(answer), Reply(None, "malformed")], matcher, k_list=(1, 5))
    # row 1: relevant at rank 1 (0.6 threshold); row 2: a malformed reply, a miss
    assert result["hit@1"] == 0.0 and result["hit@5"] == 0.5 and result["precision@5"] == pytest.approx(0.1)
    assert result["ndcg@5"] == pytest.approx(0.5 / math.log2(3)) and result["mrr@5"] == 0.25
    # taxonomy at 0.8: the partial title and the nonsense map to nothing, the history title is repeated
    assert result["not_in_catalogue_rate"] == 0.5 and result["duplicate_rate"] == 0.5
    assert result["in_history_rate"] == 0.5 and result["copy_error"] == 0.5
    assert result["malformed_answer_rate"] == 0.5 and result["empty_answer_rate"] == 0.0


# ---- sanity: chance gives RecAI's random row -----------------------------------------------------------------

def test_random_ranker_gives_the_sanity_identity(tmp_path):
    data = load_dataset(write_recai(tmp_path / "big", num_users=2000, num_items=120, length=(5, 9)))
    result = evaluate_lm(RandomBackend(), data, "ranking", num_users=None, use_cache=False, show_progress=False)
    # 1 target among 20 shuffled candidates: HR@5 = 5/20, NDCG@10 = sum_{r<10} (1/20) / log2(r + 2) = 0.2272
    assert result["hit@5"] == pytest.approx(0.25, abs=0.03)  # 2000 users: sd 0.0097
    assert result["ndcg@10"] == pytest.approx(sum(0.05 / math.log2(r + 2) for r in range(10)), abs=0.02)
    assert result["hit@20"] == 1.0 and result["not_in_candidates_rate"] == 0.0 and result["duplicate_rate"] == 0.0
    mc = evaluate_lm(RandomBackend(), data, "seq_ranking_mc", num_users=None, use_cache=False, show_progress=False)
    assert mc["accuracy@1"] == pytest.approx(0.1, abs=0.02) and mc["none_ratio"] == 0.0


# ---- cache: resume after a torn write, keyed by model and prompt ----------------------------------------------

def counting_backend(identity="copy-v1"):
    calls = []

    def copy_first_candidates(prompts):
        calls.extend(prompts)
        return ["<end>".join(re.findall(r"^<SOI>(.*?)<EOI>$", p, re.M)[::-1]) for p in prompts]

    return CallableBackend(copy_first_candidates, identity, batch_size=4), calls


def test_cache_resumes_and_is_keyed(small, tmp_path):
    cache = tmp_path / "answers.jsonl"
    backend, calls = counting_backend()
    first = evaluate_lm(backend, small, "ranking", num_users=20, cache_path=cache, show_progress=False)
    assert first["answers_generated"] == 20 and len(calls) == 20
    assert first["copy_error"] >= 1 and first["not_in_candidates_rate"] == 0.0
    lines = cache.read_bytes().splitlines(keepends=True)
    cache.write_bytes(b"".join(lines[:7]) + lines[7][:25])  # as a kill -9 mid-write leaves it
    again = evaluate_lm(backend, small, "ranking", num_users=20, cache_path=cache, show_progress=False)
    assert again["answers_cached"] == 7 and again["answers_generated"] == 13 and len(calls) == 33
    assert {k: v for k, v in again.items() if k.split("@")[0] in ("hit", "ndcg", "mrr", "map")} == \
           {k: v for k, v in first.items() if k.split("@")[0] in ("hit", "ndcg", "mrr", "map")}
    assert len(load_answers(cache)) == 20
    other, other_calls = counting_backend("copy-v2")  # another model never reuses these answers
    assert evaluate_lm(other, small, "ranking", num_users=20, cache_path=cache,
                       show_progress=False)["answers_generated"] == 20
    changed = evaluate_lm(backend, small, "ranking", num_users=20, cache_path=cache, max_history=5,
                          show_progress=False)  # another prompt never reuses them either
    assert changed["answers_generated"] == 20
    cache.write_text(cache.read_text() + "not json\n")
    with pytest.raises(LMEvalError, match="line 61 is not an answer record"):
        evaluate_lm(backend, small, "ranking", num_users=20, cache_path=cache, show_progress=False)


# ---- OpenAI-compatible endpoint on 127.0.0.1 --------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """/v1: copies the candidates (ranking) or answers B; /bad/v1: not the OpenAI shape; /locked/v1: 401."""

    delay = 0.0
    seen_keys: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen_keys.append(self.headers.get("Authorization"))
        if self.path.startswith("/locked"):
            return self._send(401, b'{"error": "bad key"}')
        if self.path.startswith("/bad"):
            return self._send(200, b'{"choices": []}' if "7" in body["messages"][-1]["content"] else b"<html>")
        time.sleep(Handler.delay)
        prompt = body["messages"][-1]["content"]
        titles = re.findall(r"^<SOI>(.*?)<EOI>$", prompt, re.M)
        text = "<end>".join(titles) + "<end>" if titles else "B"
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode())

    def _send(self, code, data):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_openai_endpoint(small, server, tmp_path, monkeypatch):
    monkeypatch.setenv("H1_TEST_KEY", "sk-secret-123")
    cache = tmp_path / "http.jsonl"
    backend = OpenAIBackend(f"{server}/v1", "tiny", api_key_env="H1_TEST_KEY", retries=0)
    result = evaluate_lm(backend, small, "ranking", num_users=12, cache_path=cache, show_progress=False)
    assert result["copies_input_rate"] == 1.0 and result["copy_error"] == 20.0 and result["hit@20"] == 1.0
    assert result["malformed_answer_rate"] == 0.0 and "Bearer sk-secret-123" in Handler.seen_keys
    assert "sk-secret" not in cache.read_text()
    mc = evaluate_lm(backend, small, "seq_ranking_mc", num_users=12, use_cache=False, show_progress=False)
    assert mc["none_ratio"] == 0.0 and 0.0 <= mc["accuracy@1"] <= 1.0


def test_openai_endpoint_failures(small, server, tmp_path):
    bad = OpenAIBackend(f"{server}/bad/v1", "tiny", retries=0)
    cache = tmp_path / "bad.jsonl"
    result = evaluate_lm(bad, small, "ranking", num_users=8, cache_path=cache, show_progress=False)
    assert result["malformed_answer_rate"] == 1.0 and result["hit@20"] == 0.0  # counted, never a crash
    assert load_answers(cache) == {}  # and not cached: the next run asks again
    with pytest.raises(BackendError, match="H1_NO_KEY"):
        evaluate_lm(OpenAIBackend(f"{server}/locked/v1", "tiny", api_key_env="H1_NO_KEY", retries=0), small,
                    "ranking", num_users=2, use_cache=False, show_progress=False)
    with pytest.raises(BackendError, match="cannot reach"):
        evaluate_lm(OpenAIBackend("http://127.0.0.1:9/v1", "tiny", retries=0), small, "ranking", num_users=2,
                    use_cache=False, show_progress=False)


def test_kill_9_resumes_from_the_cache(tmp_path, server):
    dataset = write_recai(tmp_path / "kill", num_users=30)
    cache, out = tmp_path / "kill.jsonl", tmp_path / "result.json"
    command = [sys.executable, "-m", "genrec.lmeval", "--task", "ranking", "--dataset", dataset, "--backend",
               "openai", "--base-url", f"{server}/v1", "--model", "tiny", "--batch-size", "1", "--users", "30",
               "--cache", str(cache), "--out", str(out), "--no-progress"]
    Handler.delay = 0.05
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while (not cache.exists() or len(cache.read_bytes().splitlines()) < 5) and time.time() < deadline:
            time.sleep(0.02)
        process.kill()
        process.communicate()
        assert process.returncode == -9 and not out.exists()
        Handler.delay = 0.0
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        Handler.delay = 0.0
    assert done.returncode == 0, done.stderr
    resumed = json.loads(out.read_text())
    assert 5 <= resumed["answers_cached"] < 30 and resumed["answers_cached"] + resumed["answers_generated"] == 30
    fresh = evaluate_lm(RandomBackend(), load_dataset(dataset), "ranking", num_users=30, use_cache=False,
                        show_progress=False)  # same users and candidates: a copy of the input order every time
    assert resumed["copies_input_rate"] == 1.0 and resumed["num_users"] == fresh["num_users"] == 30


def test_command_line_errors_are_one_line(small, capsys, tmp_path):
    dataset = write_recai(tmp_path / "cli", num_users=5)
    with pytest.raises(SystemExit) as exit_info:
        lmeval_main(["--task", "ranking", "--dataset", dataset, "--backend", "openai", "--base-url",
                     "http://127.0.0.1:9/v1", "--model", "x", "--no-cache", "--no-progress"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("genrec.lmeval: error: cannot reach")
    with pytest.raises(SystemExit) as exit_info:
        lmeval_main(["--task", "rating"])
    assert exit_info.value.code == 2 and "invalid choice: 'rating'" in capsys.readouterr().err
    result = lmeval_main(["--task", "cf_ranking_mc", "--dataset", dataset, "--backend", "random", "--no-cache",
                          "--no-progress", "--users", "0"])
    assert result["num_users"] == 5 and json.loads(capsys.readouterr().out)["task"] == "cf_ranking_mc"


# ---- a local Hugging Face model -----------------------------------------------------------------------------------

def test_hf_backend_with_a_tiny_llama(small, tmp_path):
    import torch

    from genrec.llm import tiny_causal_lm

    torch.set_num_threads(1)
    folder = tiny_causal_lm(tmp_path / "tiny")
    backend = HFBackend(str(folder), max_new_tokens=12, batch_size=4)
    assert backend.identity.startswith(f"hf:{folder}:") and '"max_new_tokens": 12' in backend.identity
    cache = tmp_path / "hf.jsonl"
    result = evaluate_lm(backend, small, "ranking", num_users=4, cache_path=cache, max_history=5,
                         show_progress=False)
    assert result["answers_generated"] == 4 and result["num_users"] == 4
    answers = load_answers(cache)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers.values())
    again = evaluate_lm(backend, small, "ranking", num_users=4, cache_path=cache, max_history=5, show_progress=False)
    assert again["answers_cached"] == 4 and again["ndcg@10"] == result["ndcg@10"]
    with pytest.raises(ValueError, match="identity"):
        HFBackend(backend.model)
