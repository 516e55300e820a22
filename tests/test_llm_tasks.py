"""LC-Rec prompt tasks: the loss mask, the two prompt frames, sliding windows from train sequences only."""

import copy

import numpy as np
import pytest
import torch

from genrec.data import load_dataset
from genrec.llm import BUNDLED_LLM, load_tokenizer
from genrec.llm.finetune import IGNORE
from genrec.llm.tasks import TASKS, TEMPLATES, PromptFormat, TaskData, item_title


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(BUNDLED_LLM)


@pytest.fixture(scope="module")
def ml100k():
    interactions, catalog = load_dataset("ml-100k")
    return interactions, catalog, interactions.split("loo")


def _labelled(batch, row):
    labels = batch["labels"][row]
    return labels[labels != -100].tolist(), torch.nonzero(labels != -100).squeeze(1).tolist()


@pytest.mark.parametrize("chat", [True, False])
def test_loss_covers_exactly_the_response_and_its_eos(tokenizer, chat):
    tok = tokenizer if chat else copy.deepcopy(tokenizer)
    if not chat:
        tok.chat_template = None  # a base model: the instruction/response frame
    fmt = PromptFormat(tok)
    assert fmt.chat is chat and tok.pad_token_id == tok.eos_token_id  # SmolLM2 pads with its eos
    batch = fmt.encode(["Recommend a film.", "A much longer instruction: " + "word " * 30],
                       ["<|im_start|>Toy Story", "Heat"])
    for row, response in enumerate(["<|im_start|>Toy Story", "Heat"]):
        labelled, positions = _labelled(batch, row)
        response_ids = tok(response, add_special_tokens=False)["input_ids"]
        # the response tokens, then eos: learned although eos is also the padding token
        assert labelled == response_ids + [tok.eos_token_id]
        length = int(batch["attention_mask"][row].sum())
        assert positions == list(range(length - len(labelled), length))  # the end of the real tokens
        assert batch["input_ids"][row, positions].tolist() == labelled
        prompt = tok.decode(batch["input_ids"][row, : positions[0]])
        assert ("<|im_start|>assistant" in prompt) is chat and ("### Response:" in prompt) is not chat
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_long_prompts_lose_their_start_not_the_response(tokenizer):
    fmt = PromptFormat(tokenizer, max_length=24)
    batch = fmt.encode(["word " * 100], ["Toy Story (1995)"])
    assert batch["input_ids"].shape[1] == 24
    labelled, _ = _labelled(batch, 0)
    assert tokenizer.decode(labelled[:-1]) == "Toy Story (1995)"
    with pytest.raises(ValueError, match="max_length"):
        fmt.encode(["x"], ["word " * 40])
    with pytest.raises(ValueError, match="empty response"):
        fmt.encode(["x"], [""])
    with pytest.raises(ValueError, match="empty instruction"):
        fmt.encode([" "], ["x"])


def test_prompts_are_left_padded_for_generation(tokenizer):
    fmt = PromptFormat(tokenizer)
    batch = fmt.encode_prompts(["short", "a longer instruction than the first"])
    mask = batch["attention_mask"]
    assert mask[1].all() and not mask[0].all() and mask[0, -1] == 1 and mask[0, 0] == 0
    alone = fmt.encode_prompts(["short"])["input_ids"][0]
    assert batch["input_ids"][0, -len(alone):].tolist() == alone.tolist()


def test_task_data_windows_come_from_train_sequences_only(tokenizer, ml100k):
    interactions, catalog, split = ml100k
    codes = [""] + [f"<C0_{i % 7}><C1_{i}>" for i in range(1, interactions.num_items + 1)]
    data = TaskData(split.train, codes, catalog, PromptFormat(tokenizer), max_history=20, seed=1, pretokenize=False)
    windows = sum(len(s) - 1 for s in split.train)
    assert data.counts == {"seqrec": windows, "item2index": interactions.num_items,
                           "index2item": interactions.num_items}
    rng = np.random.default_rng(0)
    seqrec = np.flatnonzero(data.rows[:, 0] == TASKS.index("seqrec"))
    for i in rng.choice(seqrec, 300, replace=False):
        _, user, end, template = data.rows[i]
        instruction, response = data.example(i)
        train = split.train[user]
        assert end < len(train) and response == codes[train[end]]  # a target inside the train sequence
        history = train[max(0, end - 20): end]
        assert instruction == TEMPLATES["seqrec"][template].format(history=", ".join(codes[j] for j in history))
    # the held-out items never appear: valid and test targets lie after the end of every window
    assert data.rows[seqrec, 2].max() < max(len(s) for s in split.train)
    # templates are sampled per example and the draw is seeded
    assert len(set(data.rows[seqrec, 3])) == len(TEMPLATES["seqrec"])
    again = TaskData(split.train, codes, catalog, PromptFormat(tokenizer), max_history=20, seed=1, pretokenize=False)
    assert np.array_equal(again.rows, data.rows)


def test_task_mix_and_sampling(tokenizer, ml100k):
    interactions, catalog, split = ml100k
    codes = [""] + [f"<C0_{i}>" for i in range(1, interactions.num_items + 1)]
    data = TaskData(split.train, codes, catalog, PromptFormat(tokenizer), tasks=("seqrec",), max_seqrec_examples=50)
    assert data.counts == {"seqrec": 50} and len(data) == 50
    item_only = TaskData(split.train, codes, catalog, PromptFormat(tokenizer), tasks=("index2item",), item_repeats=2)
    assert item_only.counts == {"index2item": 2 * interactions.num_items}
    instruction, response = item_only.example(0)
    assert codes[1] in instruction and response == item_title(catalog, 1) == "Kolya (1996)"
    padded = TaskData(split.train, codes, catalog, PromptFormat(tokenizer), tasks=("index2item",), packing=False)
    batch = TaskData.collate(padded.__getitems__([0, 1, 2]))
    assert batch["input_ids"].shape[0] == 3
    assert set(batch) == {"input_ids", "attention_mask", "labels", "label_positions"}
    packed = TaskData.collate(item_only.__getitems__([0, 1, 2]))
    assert set(packed) == {"input_ids", "labels", "position_ids", "label_positions"}
    with pytest.raises(ValueError, match="unknown or no LC-Rec tasks"):
        TaskData(split.train, codes, catalog, PromptFormat(tokenizer), tasks=("rating",))


def test_examples_are_tokenized_once_and_batches_are_the_same_either_way(tokenizer, ml100k):
    interactions, catalog, split = ml100k
    codes = [""] + [f"<C0_{i % 7}><C1_{i % 11}>" for i in range(1, interactions.num_items + 1)]
    fmt = PromptFormat(tokenizer)
    kwargs = dict(max_history=5, max_seqrec_examples=300, seed=3)
    data = TaskData(split.train, codes, catalog, fmt, **kwargs)
    lazy = TaskData(split.train, codes, catalog, fmt, pretokenize=False, **kwargs)
    assert len(data.lengths()) == len(data) and data._tokens.dtype == np.int32
    for i in [0, 1, 299, 300, len(data) - 1]:
        ids, labels = fmt.tokenize(*zip(data.example(i)))[0]
        got_ids, got_labels = data.tokenized(i)
        assert np.array_equal(got_ids, ids) and np.array_equal(got_labels, labels)
        assert data.lengths()[i] == len(ids)
    rows = [5, 17, 301, 900, 42]
    for packing in (True, False):
        data.packing = lazy.packing = packing
        a, b = data.__getitems__(rows), lazy.__getitems__(rows)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    data.packing = False
    padded = data.__getitems__(rows)
    expected = fmt.encode(*zip(*(data.example(i) for i in rows)))
    assert all(torch.equal(padded[k], expected[k]) for k in expected)
    assert torch.equal(padded["label_positions"], torch.nonzero(expected["labels"][:, 1:].reshape(-1) != IGNORE)[:, 0])


def test_packed_batches_hold_every_example_once(tokenizer, ml100k):
    interactions, catalog, split = ml100k
    codes = [""] + [f"<C0_{i % 7}><C1_{i % 11}>" for i in range(1, interactions.num_items + 1)]
    data = TaskData(split.train, codes, catalog, PromptFormat(tokenizer), max_seqrec_examples=100, pack_tokens=256)
    rows = list(range(0, 400, 25))
    batch = data.__getitems__(rows)
    assert batch["input_ids"].shape[1] <= max(256, int(data.lengths()[rows].max()))
    real = int((batch["position_ids"] > 0).sum()) + len(rows)  # every example starts at position 0
    assert real == int(data.lengths()[rows].sum())
    responses = sorted(int((data.tokenized(i)[1] != IGNORE).sum()) for i in rows)
    labelled = int((batch["labels"] != IGNORE).sum())
    assert labelled == sum(responses)
    with pytest.raises(ValueError, match="pack_tokens"):
        TaskData(split.train, codes, catalog, PromptFormat(tokenizer), tasks=("index2item",), pack_tokens=0)
