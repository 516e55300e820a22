"""Checks of genrec.decoding: the prefix trie, the HF logits processor and our constrained beam search.

Tries are hand-built with hand-counted nodes; beam search is compared with a brute-force
enumeration of every complete sequence under a prefix-dependent model, and with HF ``generate``
running a tiny random Llama under :class:`TrieLogitsProcessor`.
"""
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from genrec.decoding import PrefixTrie, TrieLogitsProcessor, constrained_beam_search

# Depth 1: {0, 1}; depth 2: {0-7, 1-2, 1-5}; depth 3: four leaves. 1 + 2 + 3 + 4 = 10 nodes.
FIXED = [[1, 2, 3], [1, 2, 4], [1, 5, 0], [0, 7, 7]]
FIXED_VALUES = [10, 11, 12, 13]
# Leaves at depths 1, 2 and 3: nodes root, {3, 1}, {1-2, 1-4}, {1-2-0, 1-2-5}: 1 + 2 + 2 + 2 = 7.
RAGGED = [[1, 2, 0], [3], [1, 4], [1, 2, 5]]


@pytest.fixture
def trie():
    return PrefixTrie(np.array(FIXED), values=FIXED_VALUES)


def nodes_of(trie, prefixes):
    return trie.walk(torch.tensor(prefixes).view(len(prefixes), -1))


# ---- PrefixTrie -------------------------------------------------------------------------------


def test_node_counts_and_breadth_first_numbering(trie):
    assert (trie.num_nodes, trie.max_depth, len(trie), trie.vocab_size) == (10, 3, 4, 8)
    assert trie.node_depth.tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    # Within a depth, nodes are ordered by (parent, token): 0 < 1; then 0-7, 1-2, 1-5.
    assert trie.child_token.tolist() == [0, 1, 7, 2, 5, 7, 3, 4, 0]
    assert trie.child_ptr.tolist() == [0, 2, 3, 5, 6, 8, 9, 9, 9, 9, 9]
    assert (torch.diff(trie.edge_key) > 0).all()
    assert trie.nbytes == 8 * (11 + 3 * 9 + 2 * 10)


def test_walk_follows_prefixes_and_leaves_with_minus_one(trie):
    assert nodes_of(trie, [[1, 2], [1, 5], [0, 7], [7, 0], [1, 3]]).tolist() == [4, 5, 3, -1, -1]
    assert nodes_of(trie, [[0, 7, 7], [1, 2, 3], [1, 2, 4], [1, 5, 0], [1, 2, 6]]).tolist() == [6, 7, 8, 9, -1]
    assert trie.walk(torch.empty(3, 0, dtype=torch.long)).tolist() == [0, 0, 0]


def test_next_nodes_missing_edges_and_minus_one(trie):
    nodes = torch.tensor([0, 0, 2, 2, -1, 4, 9])
    tokens = torch.tensor([1, 3, 5, 6, 1, 4, 0])  # 9 is a leaf: no edges at all
    assert trie.next_nodes(nodes, tokens).tolist() == [2, -1, 5, -1, -1, 8, -1]
    # A token >= vocab_size must not alias the next node's edge (key = node * V + token).
    assert trie.next_nodes(torch.tensor([1]), torch.tensor([8 + 1])).tolist() == [-1]


def test_allowed_mask_contents(trie):
    mask = trie.allowed_mask(torch.tensor([0, 2, 4, -1, 9, 3]), vocab_size=12)
    assert mask.shape == (6, 12)
    assert [row.nonzero().flatten().tolist() for row in mask] == [[0, 1], [2, 5], [3, 4], [], [], [7]]
    assert trie.allowed_mask(torch.tensor([0])).shape == (1, 8)
    with pytest.raises(ValueError, match="smaller than the trie's vocab_size"):
        trie.allowed_mask(torch.tensor([0]), vocab_size=5)


def test_leaves_and_values(trie):
    nodes = nodes_of(trie, [[1, 2, 3], [1, 2, 4], [1, 5, 0], [0, 7, 7]])
    assert trie.values(nodes).tolist() == FIXED_VALUES
    assert trie.is_leaf(nodes).all()
    inner = torch.tensor([0, 1, 4, -1])
    assert trie.values(inner).tolist() == [-1, -1, -1, -1]
    assert trie.is_leaf(inner).tolist() == [False, False, False, False]


def test_variable_length_sequences():
    trie = PrefixTrie(RAGGED)
    assert (trie.num_nodes, trie.max_depth) == (7, 3)
    prefixes = torch.tensor([[3, -1, -1], [1, 4, -1], [1, 2, 0], [1, 2, 5]])
    ends = torch.stack([trie.walk(prefixes[i:i + 1, :n]) for i, n in enumerate([1, 2, 3, 3])]).view(-1)
    assert trie.values(ends).tolist() == [1, 2, 0, 3]
    assert trie.is_leaf(ends).all()
    assert trie.allowed_mask(nodes_of(trie, [[1]]))[0].nonzero().flatten().tolist() == [2, 4]


@pytest.mark.parametrize("sequences, message", [
    ([], "at least one sequence"),
    (np.zeros((0, 3), dtype=np.int64), "at least one sequence"),
    ([[1, 2], [3, 4], [1, 2]], r"sequences 0 and 2 are the same sequence \[1, 2\]"),
    ([[1, 2, 3], [1, 2]], r"sequence 1 \[1, 2\] is a proper prefix of sequence 0 \[1, 2, 3\]; append an end"),
    ([[1, 2], [0, -3]], "sequence 1 has token -3 at position 1"),
    ([[1], []], "sequence 1 is empty"),
])
def test_invalid_sequences_raise(sequences, message):
    with pytest.raises(ValueError, match=message):
        PrefixTrie(sequences)


def test_invalid_values_and_vocab_size_raise():
    with pytest.raises(ValueError, match="got 4 sequences but 3 values"):
        PrefixTrie(FIXED, values=[1, 2, 3])
    with pytest.raises(ValueError, match="vocab_size 7 must exceed every token"):
        PrefixTrie(FIXED, vocab_size=7)


def test_prefix_allowed_tokens_fn_matches_allowed_mask(trie):
    fn = trie.prefix_allowed_tokens_fn(prompt_length=2, eos_token_id=9)
    prompt = [6, 6]
    for prefix in ([], [1], [0], [1, 2], [1, 5], [0, 7]):
        expected = trie.allowed_mask(nodes_of(trie, [prefix]) if prefix else torch.tensor([0]))[0]
        assert fn(0, torch.tensor(prompt + prefix)) == expected.nonzero().flatten().tolist()
    assert fn(0, torch.tensor(prompt + [1, 2, 3])) == [9]
    assert fn(0, torch.tensor(prompt + [1, 3])) == []


# ---- TrieLogitsProcessor ----------------------------------------------------------------------


def test_processor_keeps_only_children_scores(trie):
    scores = torch.arange(20.0).repeat(3, 1)
    input_ids = torch.tensor([[9, 9, 1, 2], [9, 9, 0, 7], [9, 9, 1, 5]])  # prompt of length 2
    out = TrieLogitsProcessor(trie, prompt_length=2, eos_token_id=19)(input_ids, scores)
    allowed = [[3, 4], [7], [0]]
    for row, tokens in enumerate(allowed):
        assert torch.isfinite(out[row]).nonzero().flatten().tolist() == tokens
        assert out[row, tokens].tolist() == scores[row, tokens].tolist()
    assert scores.isfinite().all()  # a new tensor, the input is unchanged


def test_processor_first_step_allows_root_children(trie):
    out = TrieLogitsProcessor(trie, prompt_length=3)(torch.full((4, 3), 6), torch.zeros(4, 10))
    assert (torch.isfinite(out) == torch.tensor([True, True] + [False] * 8)).all()


def test_processor_allows_only_eos_at_a_leaf(trie):
    processor = TrieLogitsProcessor(trie, prompt_length=1, eos_token_id=9)
    out = processor(torch.tensor([[5, 1, 2, 4]]), torch.zeros(1, 10))
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [9]


def test_processor_raises_on_dead_ends(trie):
    processor = TrieLogitsProcessor(trie, prompt_length=1, eos_token_id=9)
    with pytest.raises(ValueError, match=r"row 1 generated tokens \[1, 3\], which left the trie"):
        processor(torch.tensor([[5, 1, 2], [5, 1, 3]]), torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"row 0 generated tokens \[0, 7, 7\], which form a complete sequence"):
        TrieLogitsProcessor(trie, prompt_length=1)(torch.tensor([[5, 0, 7, 7]]), torch.zeros(1, 10))
    with pytest.raises(ValueError, match="shorter than prompt_length 4"):
        TrieLogitsProcessor(trie, prompt_length=4)(torch.tensor([[5, 1]]), torch.zeros(1, 10))
    with pytest.raises(ValueError, match="prompt_length must be >= 0"):
        TrieLogitsProcessor(trie, prompt_length=-1)


# ---- constrained_beam_search ------------------------------------------------------------------


class PrefixSumModel:
    """Log-probs = log_softmax((context[b] + sum of the prefix's token embeddings) @ W).

    Token -1 (finished or dead beams) embeds to zero. ``stateless`` recomputes the sum from the
    tokens; ``stateful`` keeps it as state and reorders it by ``beam_parents`` like a KV cache.
    """

    def __init__(self, seed: int, batch_size: int, num_beams: int, vocab_size: int, width: int = 8):
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.cat([torch.zeros(1, width), torch.randn(vocab_size, width, generator=g)])
        self.out = 2.0 * torch.randn(width, vocab_size, generator=g)
        self.context = torch.randn(batch_size, width, generator=g)
        self.num_beams = num_beams

    def stateless(self, tokens, state, beam_parents):
        hidden = self.context.repeat_interleave(self.num_beams, 0) + self.embed[tokens + 1].sum(1)
        return torch.log_softmax(hidden @ self.out, -1), None

    def stateful(self, tokens, state, beam_parents):
        if beam_parents is None:
            state = self.context.repeat_interleave(self.num_beams, 0)
        else:
            state = state[beam_parents] + self.embed[tokens[:, -1] + 1]
        return torch.log_softmax(state @ self.out, -1), state

    def brute_force(self, batch_row: int, sequences: list[list[int]]) -> list[tuple[float, int]]:
        """(score, index) of every sequence for one batch row, best first."""
        scored = []
        for index, seq in enumerate(sequences):
            hidden, score = self.context[batch_row].clone(), 0.0
            for token in seq:
                score += torch.log_softmax(hidden @ self.out, -1)[token].item()
                hidden += self.embed[token + 1]
            scored.append((score, index))
        return sorted(scored, reverse=True)


def random_sequences(seed: int, count: int = 30, length: int = 3, vocab: int = 6, ragged: bool = False):
    """Distinct random sequences of ``length`` tokens.

    With ``ragged``, lengths are 1..length (longer more likely), and a sequence that extends a
    shorter kept one is dropped, so that no sequence is a proper prefix of another.
    """
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, length + 1)
    lengths = rng.choice(sizes, count, p=sizes / sizes.sum()) if ragged else np.full(count, length)
    kept = []
    for seq in sorted({tuple(rng.integers(0, vocab, n).tolist()) for n in lengths}, key=len):
        if not any(seq[:len(k)] == k for k in kept):
            kept.append(seq)
    return [list(seq) for seq in kept]


def most_beams_alive(trie):
    """Beams needed to prune nothing: max over depths d of nodes at d plus sequences ended above d."""
    nodes_at = torch.bincount(trie.node_depth)
    leaf_depths = trie.node_depth[trie.is_leaf(torch.arange(trie.num_nodes))]
    leaves_at = torch.bincount(leaf_depths, minlength=len(nodes_at))
    return int((nodes_at + leaves_at.cumsum(0) - leaves_at).max())


def beam_sequences(tokens):
    return [[t for t in beam if t >= 0] for beam in tokens.tolist()]


def test_beams_are_distinct_trie_sequences_with_their_values():
    sequences = random_sequences(seed=0)
    values = 100 + np.arange(len(sequences))
    trie = PrefixTrie(sequences, values=values)
    model = PrefixSumModel(seed=0, batch_size=3, num_beams=5, vocab_size=6)
    out_values, scores, tokens = constrained_beam_search(model.stateless, trie, batch_size=3, num_beams=5)
    assert out_values.shape == scores.shape == (3, 5) and tokens.shape == (3, 5, 3)
    for b in range(3):
        beams = beam_sequences(tokens[b])
        assert len({tuple(s) for s in beams}) == 5
        assert [values[sequences.index(s)] for s in beams] == out_values[b].tolist()
        assert (scores[b, :-1] >= scores[b, 1:]).all()


@pytest.mark.parametrize("ragged", [False, True], ids=["fixed", "ragged"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_wide_beam_search_equals_brute_force(seed, ragged):
    sequences = random_sequences(seed, length=4 if ragged else 3, ragged=ragged)
    trie = PrefixTrie(sequences)
    num_beams = most_beams_alive(trie)  # nothing is pruned, so beam search is exact
    model = PrefixSumModel(seed, batch_size=2, num_beams=num_beams, vocab_size=6)
    values, scores, _ = constrained_beam_search(model.stateless, trie, batch_size=2, num_beams=num_beams)
    n = len(sequences)
    for b in range(2):
        expected = model.brute_force(b, sequences)
        assert values[b, :n].tolist() == [index for _, index in expected]
        assert scores[b, :n].tolist() == pytest.approx([score for score, _ in expected], abs=1e-4)
        assert values[b, n:].eq(-1).all() and scores[b, n:].eq(-math.inf).all()


@pytest.mark.parametrize("ragged", [False, True], ids=["fixed", "ragged"])
def test_state_reordered_by_beam_parents_matches_recomputation(ragged):
    trie = PrefixTrie(random_sequences(seed=5, count=60, length=4, ragged=ragged))
    model = PrefixSumModel(seed=5, batch_size=3, num_beams=4, vocab_size=6)
    recomputed = constrained_beam_search(model.stateless, trie, batch_size=3, num_beams=4)
    cached = constrained_beam_search(model.stateful, trie, batch_size=3, num_beams=4)
    assert torch.equal(recomputed[0], cached[0]) and torch.equal(recomputed[2], cached[2])
    assert torch.allclose(recomputed[1], cached[1], atol=1e-5)


def test_missing_beams_have_value_minus_one_and_score_minus_inf():
    trie = PrefixTrie(RAGGED, values=[5, 6, 7, 8])
    model = PrefixSumModel(seed=0, batch_size=1, num_beams=6, vocab_size=6)
    values, scores, tokens = constrained_beam_search(model.stateless, trie, batch_size=1, num_beams=6)
    assert sorted(values[0, :4].tolist()) == [5, 6, 7, 8]
    assert values[0, 4:].tolist() == [-1, -1] and scores[0, 4:].eq(-math.inf).all()
    assert tokens[0, 4:].eq(-1).all()
    assert sorted(map(tuple, beam_sequences(tokens[0, :4]))) == sorted(map(tuple, RAGGED))


def test_beam_search_rejects_bad_log_probs():
    trie = PrefixTrie(FIXED)
    with pytest.raises(ValueError, match=r"log_probs of shape \[B\*K, V\] = \[4, >= 8\]"):
        constrained_beam_search(lambda tokens, state, parents: (torch.zeros(4, 5), None), trie, 2, 2)

    def nan_at_second_step(tokens, state, parents):
        return torch.full((4, 8), math.nan if tokens.shape[1] == 1 else -1.0), None

    with pytest.raises(ValueError, match=r"beam 0 of batch row 0 \(tokens \[\d\]\) has no usable next token"):
        constrained_beam_search(nan_at_second_step, trie, 2, 2)


# ---- HF generate ------------------------------------------------------------------------------


def test_hf_generate_with_processor_matches_our_beam_search():
    """HF beam search under TrieLogitsProcessor returns trie sequences + eos, as our search does.

    HF scores a beam by the sum of its log-probs including the final eos, divided by
    ``length ** length_penalty``. All sequences have length C, so every finished beam has length
    C + 1; with ``length_penalty=0.0`` HF's scores are plain sums. Our search therefore runs on the
    same sequences with eos appended (the eos step is then scored by both) and must return the
    same items, in the same order, with the same scores.
    """
    eos, pad, C, K, B, P = 1, 0, 3, 4, 2, 5
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, pad_token_id=pad, bos_token_id=2,
                         eos_token_id=eos, initializer_range=0.5)
    model = LlamaForCausalLM(config).eval()
    rng = np.random.default_rng(0)
    sequences = np.unique(rng.integers(2, 40, size=(12, C)), axis=0)  # never eos or pad
    values = 100 + np.arange(len(sequences))
    prompts = torch.from_numpy(rng.integers(2, 40, size=(B, P)))

    processor = TrieLogitsProcessor(PrefixTrie(sequences, values=values), prompt_length=P, eos_token_id=eos)
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), num_beams=K, num_return_sequences=K,
                         do_sample=False, max_new_tokens=C + 1,
                         logits_processor=LogitsProcessorList([processor]), eos_token_id=eos,
                         pad_token_id=pad, length_penalty=0.0, return_dict_in_generate=True,
                         output_scores=True)
    generated = out.sequences[:, P:].view(B, K, C + 1)
    assert generated[:, :, C].eq(eos).all()
    index = {tuple(s): v for s, v in zip(sequences.tolist(), values.tolist())}
    hf_values = [[index[tuple(s)] for s in row[:, :C].tolist()] for row in generated]
    assert all(len(set(row)) == K for row in hf_values)

    def step_fn(tokens, state, beam_parents):
        ids = torch.cat([prompts.repeat_interleave(K, 0), tokens.clamp(min=pad)], dim=1)
        with torch.no_grad():
            return torch.log_softmax(model(ids).logits[:, -1].float(), dim=-1), None

    with_eos = PrefixTrie(np.hstack([sequences, np.full((len(sequences), 1), eos)]), values=values)
    ours, scores, _ = constrained_beam_search(step_fn, with_eos, batch_size=B, num_beams=K)
    assert ours.tolist() == hf_values
    assert scores.view(-1).tolist() == pytest.approx(out.sequences_scores.tolist(), abs=1e-4)
