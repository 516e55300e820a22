"""Training windows cover every target of every training sequence exactly once, with the right history;
history examples and padding."""

import numpy as np
import pytest
import torch

from genrec.data.padding import left_pad, right_pad
from genrec.data.windows import SequenceWindows, history_examples


@pytest.mark.parametrize("n,max_history,stride", [(2, 4, 4), (7, 4, 4), (13, 4, 2), (5, 4, 1), (30, 5, 3)])
def test_every_target_once_with_correct_context(n, max_history, stride):
    seq = np.arange(101, 101 + n)
    data = SequenceWindows([seq], max_history, stride)
    seen = []
    for i in range(len(data)):
        x, y = data[i]["input_ids"].numpy(), data[i]["labels"].numpy()
        for pos in np.flatnonzero(y != -100):
            target = y[pos]
            t = int(np.flatnonzero(seq == target)[0])
            history = x[: pos + 1][x[: pos + 1] > 0]
            # the input up to this position is exactly the most recent items before the target
            assert list(history) == list(seq[max(0, t - len(history)):t])
            assert len(history) == min(t, max_history) or len(history) >= max_history - stride
            seen.append(t)
    assert sorted(seen) == list(range(1, n))


def test_short_sequences_add_nothing_and_bad_stride():
    assert len(SequenceWindows([np.array([5])], 4)) == 0
    with pytest.raises(ValueError, match="stride"):
        SequenceWindows([np.arange(1, 5)], 4, stride=5)


def test_windows_with_a_user_prefix_the_user_and_label_each_item_once():
    windows = SequenceWindows([np.array([1, 2, 3, 4, 5, 6, 7]), np.array([9])], max_history=3, with_user=True)
    rows = [(int(w["users"]), w["items"].tolist(), w["labels"].tolist()) for w in windows]
    # user 0 (7 items), L 3, stride 3: windows end at 7, 4, 1 (latest first)
    assert rows == [
        (0, [4, 5, 6], [-100, 5, 6, 7]),  # [u0, 4, 5, 6] -> 4, 5, 6, 7; 4 belongs to the next window
        (0, [1, 2, 3], [-100, 2, 3, 4]),  # [u0, 1, 2, 3] -> 1, 2, 3, 4; 1 belongs to the earliest window
        (0, [0, 0, 0], [1, -100, -100, -100]),  # [u0] -> 1: the first item from the user alone
        (1, [0, 0, 0], [9, -100, -100, -100]),
    ]
    labels = torch.stack([w["labels"] for w in windows])
    assert sorted(labels[labels > 0].tolist()) == [1, 2, 3, 4, 5, 6, 7, 9]  # every item a target once
    with pytest.raises(ValueError, match="stride"):
        SequenceWindows([np.arange(1, 5)], max_history=3, stride=4, with_user=True)


@pytest.mark.parametrize("n,max_history,stride", [(1, 4, 4), (7, 4, 4), (13, 4, 2), (5, 4, 1), (30, 5, 3)])
def test_user_windows_are_the_plain_windows_plus_the_first_item(n, max_history, stride):
    seq = np.arange(101, 101 + n)
    data = SequenceWindows([seq], max_history, stride, with_user=True)
    seen = []
    for i in range(len(data)):
        x, y = data[i]["items"].numpy(), data[i]["labels"].numpy()
        for pos in np.flatnonzero(y != -100):  # position 0 is the user, position p the item x[p - 1]
            t = int(np.flatnonzero(seq == y[pos])[0])
            assert list(x[:pos]) == list(seq[t - pos:t])
            seen.append(t)
    assert sorted(seen) == list(range(n))


def test_history_examples_and_padding():
    examples = history_examples([np.array([1, 2, 3, 4, 5]), np.array([6, 7])], max_history=3)
    assert examples.tensors["history"].tolist() == [[1, 0, 0], [1, 2, 0], [1, 2, 3], [2, 3, 4], [6, 0, 0]]
    assert examples.tensors["target"].tolist() == [2, 3, 4, 5, 7]
    with pytest.raises(ValueError, match="no training examples"):
        history_examples([np.array([1])], max_history=3)
    histories = [np.array([1, 2, 3, 4]), np.array([5]), np.array([], dtype=np.int64)]
    assert right_pad(histories, 3).tolist() == [[2, 3, 4], [5, 0, 0], [0, 0, 0]]
    assert right_pad([np.array([5])], 3).tolist() == [[5]]  # as wide as the longest kept history
    assert left_pad(histories, 3).tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
