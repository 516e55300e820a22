"""MIND reader on fixture files written here, and per-impression metrics on hand-computed impressions."""

import gzip
import math
from datetime import datetime

import numpy as np
import pytest

from genrec.data import DatasetFileError
from genrec.data.mind import MindNews, read_mind, read_mind_behaviors, read_mind_news
from genrec.evaluation import (
    evaluate_impressions,
    impression_auc,
    impression_mrr,
    impression_ndcg,
    user_gauc,
)

NEWS = [
    "N1\tsports\tgolf\tTiger wins\tA long abstract.\thttps://x/1\t[]\t[]",
    "N2\tnews\tnewsus\tStorm hits coast\t\thttps://x/2\t[{\"Label\": \"Storm\"}]\t[]",
    "N3\tfinance\tmarkets\tStocks rally\tMarkets up.\thttps://x/3\t[]\t[]",
    "N4\tsports\tnfl\tBig game tonight\t\t\t\t",
]
BEHAVIORS = [
    "1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN3-1 N4-0",
    "2\tU2\t11/12/2019 1:00:00 PM\t\tN1-0 N2-1 N3-1",
    "3\tU1\t11/13/2019 11:59:59 PM\tN1 N2\tN4-1",
]


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def split(tmp_path):
    write(tmp_path / "train" / "news.tsv", NEWS)
    write(tmp_path / "train" / "behaviors.tsv", BEHAVIORS)
    return tmp_path / "train"


# ------------------------------------------------------------------------------------------ reader


def test_news_are_indexed_from_one_with_text_fields(split):
    news, _ = read_mind(split)
    assert isinstance(news, MindNews)
    assert news.catalog.item_ids == ["[PAD]", "N1", "N2", "N3", "N4"]
    assert news.index == {"N1": 1, "N2": 2, "N3": 3, "N4": 4}
    assert news.num_news == 4
    assert list(news.catalog.fields) == ["title", "category", "subcategory", "abstract"]
    assert news.catalog.fields["abstract"] == ["", "A long abstract.", "", "Markets up.", ""]
    assert news.catalog.text(1) == "Tiger wins. Category: sports. Subcategory: golf. Abstract: A long abstract."
    assert news.catalog.text(2) == "Storm hits coast. Category: news. Subcategory: newsus."
    assert news.urls == ["", "https://x/1", "https://x/2", "https://x/3", ""]
    assert news.title_entities[2] == '[{"Label": "Storm"}]'
    assert news.abstract_entities[4] == ""


def test_behaviors_keep_one_record_per_impression(split):
    _, behaviors = read_mind(split)
    assert behaviors.impression_ids == ["1", "2", "3"]
    assert behaviors.user_ids == ["U1", "U2"]
    assert behaviors.users.tolist() == [0, 1, 0]
    assert (behaviors.num_impressions, behaviors.num_users, behaviors.labelled) == (3, 2, True)
    assert [c.tolist() for c in behaviors.candidates] == [[3, 4], [1, 2, 3], [4]]
    assert [y.tolist() for y in behaviors.labels] == [[1, 0], [0, 1, 1], [1]]
    assert [h.tolist() for h in behaviors.histories] == [[1, 2], [], [1, 2]]
    assert behaviors.times.tolist() == [datetime(2019, 11, 11, 9, 5, 58), datetime(2019, 11, 12, 13, 0, 0),
                                        datetime(2019, 11, 13, 23, 59, 59)]
    assert behaviors.path == split / "behaviors.tsv"
    with pytest.raises(ValueError):
        behaviors.candidates[0][0] = 1  # read-only


def test_unlabelled_test_file_has_no_labels(split, tmp_path):
    path = write(tmp_path / "test" / "behaviors.tsv", ["7\tU9\t11/15/2019 8:00:00 AM\tN2\tN1 N3 N4"])
    behaviors = read_mind_behaviors(path, read_mind_news(split / "news.tsv"))
    assert behaviors.labels is None and not behaviors.labelled
    assert behaviors.candidates[0].tolist() == [1, 3, 4]


def test_several_news_files_merge_first_row_wins(split, tmp_path):
    dev = write(tmp_path / "dev" / "news.tsv", ["N3\tother\tother\tChanged title\t\t\t[]\t[]",
                                                "N5\tlifestyle\tfood\tRecipes\t\t\t[]\t[]"])
    news = read_mind_news([split / "news.tsv", dev])
    assert news.catalog.item_ids == ["[PAD]", "N1", "N2", "N3", "N4", "N5"]
    assert news.catalog.fields["title"][3] == "Stocks rally"
    gz = tmp_path / "gz" / "news.tsv.gz"
    gz.parent.mkdir()
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(NEWS) + "\n")
    assert read_mind_news(gz).num_news == 4


@pytest.mark.parametrize(
    "rows, message",
    [
        (["1\tU1\t11/11/2019 9:05:58 AM\tN1\tN3-1 N4-0", "2\tU2\t11/11/2019 9:05:58 AM\tN9 N1\tN3-1"],
         r"behaviors.tsv: line 2 \(history\) names the news id 'N9', which no news file lists .*read the news.tsv"),
        (["1\tU1\t11/11/2019 9:05:58 AM\t\tN3-1 N7-0"], r"line 1 \(impressions\) names the news id 'N7'"),
        (["1\tU1\t11/11/2019 9:05:58 AM\tN1"], "line 1 has 4 tab-separated columns, expected 5"),
        (["1\tU1\t2019-11-11 09:05\tN1\tN3-1"], "line 1 has the time '2019-11-11 09:05'"),
        (["1\tU1\t11/11/2019 9:05:58 AM\tN1\tN3-2"], "line 1 has the candidate 'N3-2'"),
        (["1\tU1\t11/11/2019 9:05:58 AM\tN1\tN3-1 N4"], "line 1 mixes labelled"),
        (["1\tU1\t11/11/2019 9:05:58 AM\t\tN3-1", "2\tU1\t11/11/2019 9:05:58 AM\t\tN3"], "line 2 mixes labelled"),
        (["1\tU1\t11/11/2019 9:05:58 AM\t\t "], r"line 1 \(impression 1\) shows no news"),
        (["1\tU1\t11/11/2019 9:05:58 AM\t\tN3-1", "1\tU2\t11/11/2019 9:05:58 AM\t\tN3-1"],
         "line 2 has impression id '1' again"),
        (["1\t\t11/11/2019 9:05:58 AM\t\tN3-1"], "line 1 has an empty user_id"),
        ([""], "no impressions"),
    ],
)
def test_malformed_behaviors_name_file_and_line(split, tmp_path, rows, message):
    path = write(tmp_path / "bad" / "behaviors.tsv", rows)
    with pytest.raises(DatasetFileError, match=message) as error:
        read_mind_behaviors(path, read_mind_news(split / "news.tsv"))
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "rows, message",
    [
        (NEWS[:1] + ["N2\tnews\tnewsus\tStorm"], "news.tsv: line 2 has 4 tab-separated columns, expected 8"),
        (NEWS[:2] + [NEWS[0]], "line 3 repeats news id 'N1'"),
        (["\tnews\tnewsus\tStorm\t\t\t[]\t[]"], "line 1 has an empty news_id"),
    ],
)
def test_malformed_news_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(DatasetFileError, match=message):
        read_mind_news(write(tmp_path / "news.tsv", rows))


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetFileError, match=r"news.tsv: file not found; MIND files come from https://msnews"):
        read_mind(tmp_path)


# ----------------------------------------------------------------------------------------- metrics

# Legommenders issue #19: scores [0.9, 0.8, 0.6, 0.4], labels [1, 0, 0, 1]: MIND MRR 0.625.
LABELS = [np.array([1, 0, 0, 1]), np.array([0, 1, 0]), np.array([1, 1]), np.array([0, 0])]
SCORES = [np.array([0.9, 0.8, 0.6, 0.4]), np.array([0.3, 0.2, 0.1]), np.array([0.5, 0.7]), np.array([0.1, 0.2])]


def test_auc_per_impression_skips_single_class():
    auc = impression_auc(LABELS, SCORES)
    # imp 0: positives 0.9, 0.4 vs negatives 0.8, 0.6 -> 0.9 beats both, 0.4 beats none: 2 / 4.
    # imp 1: positive 0.2 vs 0.3 (loses), 0.1 (wins): 1 / 2. imps 2, 3: one class, undefined.
    assert auc[:2].tolist() == [0.5, 0.5]
    assert np.isnan(auc[2:]).all()


def test_mrr_is_mind_mrr_not_first_hit():
    mrr = impression_mrr(LABELS, SCORES)
    assert mrr[0] == pytest.approx((1 / 1 + 1 / 4) / 2)  # 0.625, first-hit MRR would be 1.0
    assert mrr[1] == pytest.approx(1 / 2)
    assert mrr[2] == pytest.approx((1 + 1 / 2) / 2)  # all clicked: ranks 1 and 2
    assert np.isnan(mrr[3])  # no click


def test_ndcg_binary_gains_over_ideal_dcg():
    ndcg5 = impression_ndcg(LABELS, SCORES, 5)
    assert ndcg5[0] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert ndcg5[1] == pytest.approx(1 / math.log2(3))
    assert ndcg5[2] == pytest.approx(1.0)
    assert np.isnan(ndcg5[3])
    ndcg2 = impression_ndcg(LABELS, SCORES, 2)
    assert ndcg2[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))  # rank-4 click is cut off
    assert impression_ndcg(LABELS, SCORES, 1)[1] == 0.0


def test_ties_are_pessimistic_for_ranks_and_half_for_auc():
    labels, scores = [np.array([0, 1, 0])], [np.array([0.5, 0.5, 0.5])]
    assert impression_mrr(labels, scores)[0] == pytest.approx(1 / 3)  # click ranked after both tied non-clicks
    assert impression_ndcg(labels, scores, 10)[0] == pytest.approx(1 / math.log2(4))
    assert impression_auc(labels, scores)[0] == 0.5
    # Two tied clicks occupy ranks 2 and 3 behind the tied non-click: a real permutation, no double count.
    labels, scores = [np.array([1, 0, 1])], [np.array([0.5, 0.5, 0.5])]
    assert impression_mrr(labels, scores)[0] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert impression_auc([np.array([1, 0, 0])], [np.array([0.5, 0.5, 0.1])])[0] == 0.75


def test_evaluate_impressions_averages_and_counts():
    result = evaluate_impressions(LABELS, SCORES)
    assert list(result) == ["auc", "mrr", "ndcg@5", "ndcg@10", "impressions", "auc_impressions",
                            "clicked_impressions"]
    assert result["auc"] == 0.5  # over impressions 0 and 1 only
    assert result["mrr"] == pytest.approx((0.625 + 0.5 + 0.75) / 3)  # over the 3 clicked impressions
    assert result["ndcg@10"] == pytest.approx(np.mean(impression_ndcg(LABELS, SCORES, 10)[:3]))
    assert (result["impressions"], result["auc_impressions"], result["clicked_impressions"]) == (4, 2, 3)
    assert all(type(result[key]) is float for key in ("auc", "mrr", "ndcg@5", "ndcg@10"))


def test_gauc_pools_a_users_impressions_and_weights_by_candidates():
    users = ["a", "b", "a", "c"]
    # user a: impressions 0 and 2 pooled: positives 0.9, 0.4, 0.5, 0.7 vs negatives 0.8, 0.6 -> wins 2+0+0+1 = 3
    # of 8; weight 6. user b: impression 1, AUC 0.5, weight 3. user c: no click, skipped.
    gauc, counted = user_gauc(LABELS, SCORES, users)
    assert counted == 2
    assert gauc == pytest.approx((6 * 3 / 8 + 3 * 0.5) / 9)
    result = evaluate_impressions(LABELS, SCORES, users=np.array(users))
    assert result["gauc"] == pytest.approx(gauc) and result["gauc_users"] == 2
    with pytest.raises(ValueError, match="one user per impression"):
        user_gauc(LABELS, SCORES, users[:2])


def mind_reference(labels, scores):
    """The MIND competition's evaluate.py (msnews.github.io), transcribed; valid for untied scores."""

    def dcg(y_true, y_score, k):
        order = np.argsort(y_score)[::-1]
        y_true = np.take(y_true, order[:k])
        return np.sum((2 ** y_true - 1) / np.log2(np.arange(len(y_true)) + 2))

    def mrr(y_true, y_score):
        order = np.argsort(y_score)[::-1]
        y_true = np.take(y_true, order)
        return np.sum(y_true / (np.arange(len(y_true)) + 1)) / np.sum(y_true)

    def auc(y_true, y_score):  # pairwise definition of roc_auc_score
        pos, neg = y_score[y_true == 1], y_score[y_true == 0]
        return np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))

    return {"auc": np.mean([auc(y, s) for y, s in zip(labels, scores)]),
            "mrr": np.mean([mrr(y, s) for y, s in zip(labels, scores)]),
            **{f"ndcg@{k}": np.mean([dcg(y, s, k) / dcg(y, y, k) for y, s in zip(labels, scores)]) for k in (5, 10)}}


def test_matches_mind_scorer_on_random_impressions():
    rng = np.random.default_rng(0)
    labels, scores = [], []
    for _ in range(200):
        size = int(rng.integers(2, 40))
        y = np.zeros(size, dtype=np.int64)
        y[rng.choice(size, int(rng.integers(1, size)), replace=False)] = 1  # both classes present
        labels.append(y)
        scores.append(rng.normal(size=size))
    result = evaluate_impressions(labels, scores)
    reference = mind_reference(labels, scores)
    for key, value in reference.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    # Tied scores: AUC still equals the pairwise definition with half credit.
    tied = [np.round(s) for s in scores]
    assert evaluate_impressions(labels, tied)["auc"] == pytest.approx(mind_reference(labels, tied)["auc"])


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([np.array([1, 0])], [np.array([0.1])], "impression 0 has 2 labels but 1 scores"),
        ([np.array([1, 0])], [], "labels hold 1 impressions, scores 0"),
        ([], [], "no impressions"),
        ([np.array([], dtype=int)], [np.array([])], "impression 0 has no candidates"),
        ([np.array([1, 2])], [np.array([0.1, 0.2])], "labels must be 0 or 1"),
        ([np.array([1, 0])], [np.array([0.1, np.nan])], "NaN"),
        ([np.array([0, 0])], [np.array([0.1, 0.2])], "no impression has a click"),
        ([np.array([1, 1])], [np.array([0.1, 0.2])], "AUC is undefined"),
    ],
)
def test_invalid_impressions_raise(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        evaluate_impressions(labels, scores)
    with pytest.raises(ValueError, match="positive integer"):
        impression_ndcg([np.array([1, 0])], [np.array([0.1, 0.2])], 0)


def test_metrics_on_read_behaviors(split):
    _, behaviors = read_mind(split)
    scores = [candidates.astype(float) for candidates in behaviors.candidates]  # score = news index
    result = evaluate_impressions(behaviors.labels, scores, users=behaviors.users)
    # imp 1: N3 (3, click) below N4 (4): AUC 0, MRR 1/2. imp 2: N1-0 N2-1 N3-1 scored 1, 2, 3: AUC 1,
    # MRR (1 + 1/2) / 2. imp 3: one clicked candidate: MRR 1, no AUC.
    assert result["auc"] == 0.5 and result["auc_impressions"] == 2
    assert result["mrr"] == pytest.approx((0.5 + 0.75 + 1) / 3)
