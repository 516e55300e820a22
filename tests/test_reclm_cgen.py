"""RecLM-cgen: span tokens, the title trie, the span-aware logits processor, the scope-mask loss, recommend_text.

A tiny random Llama with SmolLM2's real tokenizer stands in for the LLM; a small catalogue of real
movie titles (with a duplicate and a title that is a prefix of another) for the items.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from genrec.decoding.span_constraints import SpanLogitsProcessor
from genrec.decoding.span_loss import scope_mask_loss, span_nodes
from genrec.decoding.title_trie import EOI, SOI, TitleTrie, add_span_tokens, catalogue_titles
from genrec.llm.finetune import IGNORE, causal_lm_loss
from genrec.llm.pretrained import load_causal_lm, tiny_causal_lm
from genrec.models.reclm import RecLM

PERIOD = 9  # the boosted random model opens a span at every 9th position
RAW = ["", "Heat (1995)", "Heat Wave (1990)", "Toy Story (1995)", "Toy Story (1995)", "Kolya (1996)",
       "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("reclm_cgen") / "llama", "llama", seed=3))


@pytest.fixture(scope="module")
def lm(tiny):
    llm, tokenizer = load_causal_lm(tiny)
    add_span_tokens(tokenizer, llm)
    titles = catalogue_titles(RAW, tokenizer)
    return llm.eval(), tokenizer, TitleTrie(titles, tokenizer)


class Boost(LogitsProcessor):
    """Adds ``amount`` to one token's score at every step, or only at steps ``t % period == 0``
    (makes a random model open spans now and then, and not stop)."""

    def __init__(self, token, amount, period=None):
        self.token, self.amount, self.period = token, amount, period

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        if self.period is None or input_ids.shape[1] % self.period == 0:
            scores[:, self.token] += self.amount
        return scores


def test_titles_are_distinct_and_round_trip(lm):
    _, tokenizer, tt = lm
    assert tt.titles[3] == "Toy Story (1995)" and tt.titles[4] == "Toy Story (1995) (2)"
    for title in tt.titles[1:]:
        assert tokenizer.decode(tokenizer(title, add_special_tokens=False)["input_ids"]) == title
    soi, eoi = tokenizer.convert_tokens_to_ids([SOI, EOI])
    assert (soi, eoi) == (tt.soi_id, tt.eoi_id) and len(tokenizer) == eoi + 1
    ids = tokenizer(f"I suggest {tt.span_text(2)} and {tt.span_text(4)}.", add_special_tokens=False)["input_ids"]
    assert tt.parse(ids, tokenizer) == [("Heat Wave (1990)", 2), ("Toy Story (1995) (2)", 4)]


def test_span_token_rows_start_at_the_phrase_mean(tiny):
    llm, tokenizer = load_causal_lm(tiny)
    soi, _ = add_span_tokens(tokenizer, llm)
    pieces = tokenizer("start of an item", add_special_tokens=False)["input_ids"]
    table = llm.get_input_embeddings().weight
    assert torch.allclose(table[soi], table[pieces].mean(0))


def _ids(tokenizer, text):
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def test_processor_masks_only_inside_spans_and_never_repeats(lm):
    _, tokenizer, tt = lm
    proc = SpanLogitsProcessor(tt, prompt_length=0, eos_token_id=tokenizer.eos_token_id)
    vocab = len(tokenizer)
    scores = torch.randn(1, vocab)
    free = _ids(tokenizer, f"Try {tt.span_text(1)} tonight")
    assert torch.equal(proc(free, scores), scores)  # free text: untouched
    heat = tokenizer("Heat", add_special_tokens=False)["input_ids"]
    inside = torch.cat([_ids(tokenizer, "Try "), torch.tensor([[tt.soi_id] + heat])], dim=1)
    allowed = torch.isfinite(proc(inside, scores)[0]).nonzero().squeeze(1).tolist()
    wave = tokenizer("Heat Wave (1990)", add_special_tokens=False)["input_ids"][len(heat)]
    paren = tokenizer("Heat (1995)", add_special_tokens=False)["input_ids"][len(heat)]
    assert sorted(allowed) == sorted({wave, paren})
    # once "Heat (1995)" has been named, only "Heat Wave" remains after "<SOI>Heat"
    again = torch.cat([_ids(tokenizer, tt.span_text(1) + ", "), torch.tensor([[tt.soi_id] + heat])], dim=1)
    assert torch.isfinite(proc(again, scores)[0]).nonzero().squeeze(1).tolist() == [wave]
    # a complete title: only <EOI>
    full = torch.cat([torch.tensor([[tt.soi_id]]), _ids(tokenizer, "Kolya (1996)")], dim=1)
    assert torch.isfinite(proc(full, scores)[0]).nonzero().squeeze(1).tolist() == [tt.eoi_id]


def test_processor_raises_when_a_span_has_nothing_left(lm):
    _, tokenizer, tt = lm
    proc = SpanLogitsProcessor(tt, prompt_length=0, eos_token_id=tokenizer.eos_token_id)
    text = tt.span_text(5)
    kol = tokenizer("Kol", add_special_tokens=False)["input_ids"]
    ids = torch.cat([_ids(tokenizer, text), torch.tensor([[tt.soi_id] + kol])], dim=1)
    with pytest.raises(ValueError, match="every continuation named already"):
        proc(ids, torch.randn(1, len(tokenizer)))


def _generate(llm, tokenizer, prompt, processors, **kwargs):
    config = GenerationConfig(max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id, **kwargs)
    return llm.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config,
                        logits_processor=LogitsProcessorList(processors))


def test_greedy_generation_spans_are_catalogue_items_and_free_text_is_unchanged(lm):
    llm, tokenizer, tt = lm
    prompt = _ids(tokenizer, "Recommend some movies:")
    boost = [Boost(tt.soi_id, 50.0, PERIOD), Boost(tokenizer.eos_token_id, -1e9)]
    plain = _generate(llm, tokenizer, prompt, boost)[0, prompt.shape[1]:].tolist()
    span = SpanLogitsProcessor(tt, prompt.shape[1], tokenizer.eos_token_id)
    constrained = _generate(llm, tokenizer, prompt, boost + [span])[0, prompt.shape[1]:].tolist()
    first = plain.index(tt.soi_id)  # the boosted random model does open a span
    assert constrained[: first + 1] == plain[: first + 1]  # identical until the first span opens
    spans = tt.parse(constrained, tokenizer)
    assert len(spans) >= 2
    complete = [item for _, item in spans[:-1]]
    assert all(item > 0 for item in complete) and len(set(complete)) == len(complete)
    # between spans, each free-text token is the unconstrained argmax of the same logits
    ids = torch.cat([prompt[0], torch.tensor(constrained)])
    with torch.no_grad():
        logits = llm(ids[None]).logits[0]
    depth = span_nodes(ids[None], tt)[0]
    free = 0
    for t, token in enumerate(constrained):
        position = prompt.shape[1] + t - 1  # the logits that chose token t
        if depth[position] < 0:  # no span open before token t
            scores = logits[position].clone()
            if (position + 1) % PERIOD == 0:
                scores[tt.soi_id] += 50.0
            scores[tokenizer.eos_token_id] -= 1e9
            assert token == int(scores.argmax()), f"free token {t} differs from the unconstrained choice"
            free += token != tt.soi_id
    assert free > 0  # some real free text was generated and checked


def test_beams_are_distinct_and_list_mode_spells_exactly_n_items(lm):
    llm, tokenizer, tt = lm
    prompt = _ids(tokenizer, "Two movies:")
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    span = SpanLogitsProcessor(tt, prompt.shape[1], tokenizer.eos_token_id, item_count=2, separator_id=newline)
    out = _generate(llm, tokenizer, prompt, [span], num_beams=4, num_return_sequences=4)
    answers = [row[prompt.shape[1]:].tolist() for row in out]
    cut = [a[: a.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in a else a for a in answers]
    assert len({tuple(a) for a in cut}) == 4
    for answer in cut:
        items = [item for _, item in tt.parse(answer, tokenizer)]
        assert len(items) == 2 and all(i > 0 for i in items) and items[0] != items[1]
        assert answer.count(newline) == 1 and answer[-1] == tt.eoi_id


def test_scope_mask_loss_matches_a_hand_masked_cross_entropy(lm):
    llm, tokenizer, tt = lm
    text = f"Watch {tt.span_text(2)} now"
    ids = _ids(tokenizer, "Q: movie? A: " + text)
    labels = ids.clone()
    labels[0, :4] = IGNORE
    loss = scope_mask_loss(llm, ids, labels, tt)
    with torch.no_grad():
        logits = llm(ids).logits[0, :-1].float()
    nodes = span_nodes(ids, tt)[0, :-1]
    total, count = 0.0, 0
    for p in range(ids.shape[1] - 1):
        if labels[0, p + 1] == IGNORE:
            continue
        row = logits[p].clone()
        if nodes[p] >= 0:
            row[~tt.trie.allowed_mask(nodes[p:p + 1], row.shape[0])[0]] = float("-inf")
        total += -F.log_softmax(row, -1)[labels[0, p + 1]].item()
        count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    plain = causal_lm_loss(llm, ids, labels)
    assert loss.item() < plain.item()  # masking removes competitors inside the span
    no_span = _ids(tokenizer, "Q: movie? A: nothing today")
    free_labels = no_span.clone()
    free_labels[0, :4] = IGNORE
    assert scope_mask_loss(llm, no_span, free_labels, tt).item() == pytest.approx(
        causal_lm_loss(llm, no_span, free_labels).item(), rel=1e-5)
    bad = _ids(tokenizer, f"A: {SOI}Star Wars (1977){EOI}")
    with pytest.raises(ValueError, match="not a continuation"):
        scope_mask_loss(llm, bad, bad.clone(), tt)


def test_recommend_text_and_lists_name_only_catalogue_items(tiny):
    model = RecLM(pretrained_path=tiny, noun="movie", list_length=3)
    model.attach(catalogue_titles(RAW, model.tokenizer))
    items, scores = model.recommend_indices([[1, 5]], k=5)
    listed = items[0, :3].tolist()
    assert all(i > 0 for i in listed) and len(set(listed)) == 3 and items[0, 3:].tolist() == [-1, -1]
    text, named = model.recommend_text([1, 5], "Something funny?", max_new_tokens=40)
    assert all(i > 0 for i in named) and len(set(named)) == len(named)
    assert text.count(SOI) >= len(named)


def test_excluded_items_are_never_named_per_prompt_and_per_beam(tiny):
    """excluded (e.g. the history) leaves exactly the other items; rows of one prompt share its list."""
    model = RecLM(pretrained_path=tiny, noun="movie", list_length=3)
    model.attach(catalogue_titles(RAW, model.tokenizer))
    histories = [np.array([1, 2, 3, 4, 5]), np.array([4, 5, 6, 7, 8])]
    lists, _ = model.recommend_lists(histories, exclude_history=True)
    assert [sorted(row) for row in lists] == [[6, 7, 8], [1, 2, 3]]
    instructions = [model.instruction(h, "sequential", 3) for h in histories]
    answers = model.generate_answers(instructions, True, item_count=3, num_beams=2, num_return_sequences=2,
                                     excluded=[h.tolist() for h in histories])
    named = [sorted(model.entry_item(e) for e in model.answer_entries(a)) for a in answers]
    assert named == [[6, 7, 8], [6, 7, 8], [1, 2, 3], [1, 2, 3]]
    plain, _ = model.recommend_lists(histories)  # without it, the history is allowed
    assert all(len(set(row)) == 3 and all(i > 0 for i in row) for row in plain)
    with pytest.raises(ValueError, match="one list per prompt"):
        model.generate_answers(instructions, True, item_count=3, excluded=[[1], [2], [3]])
