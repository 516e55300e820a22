"""Training windows cover every target of every training sequence exactly once, with the right history."""

import numpy as np
import pytest

from genrec.data.windows import SequenceWindows


@pytest.mark.parametrize("n,max_len,stride", [(2, 4, 4), (7, 4, 4), (13, 4, 2), (5, 4, 1), (30, 5, 3)])
def test_every_target_once_with_correct_context(n, max_len, stride):
    seq = np.arange(101, 101 + n)
    data = SequenceWindows([seq], max_len, stride)
    seen = []
    for i in range(len(data)):
        x, y = data[i]["input_ids"].numpy(), data[i]["labels"].numpy()
        for pos in np.flatnonzero(y != -100):
            target = y[pos]
            t = int(np.flatnonzero(seq == target)[0])
            history = x[: pos + 1][x[: pos + 1] > 0]
            # the input up to this position is exactly the most recent items before the target
            assert list(history) == list(seq[max(0, t - len(history)):t])
            assert len(history) == min(t, max_len) or len(history) >= max_len - stride
            seen.append(t)
    assert sorted(seen) == list(range(1, n))


def test_short_sequences_add_nothing_and_bad_stride():
    assert len(SequenceWindows([np.array([5])], 4)) == 0
    with pytest.raises(ValueError, match="stride"):
        SequenceWindows([np.arange(1, 5)], 4, stride=5)
