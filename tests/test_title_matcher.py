"""TitleMatcher: exact title / id, hand-computed trigram TF-IDF cosine, thresholds, list splitting."""

import math

import numpy as np
import pytest

from genrec.evaluation.title_matcher import (
    RETRIEVAL_THRESHOLD,
    STRICT_THRESHOLD,
    TitleMatcher,
    normalize_title,
    split_list,
)

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "The Good, The Bad and The Ugly (1966)",
          "Toy Story (1995)", "Hamlet (1948)", "Hamlet (1996)"]


def test_thresholds_are_recais():
    assert (RETRIEVAL_THRESHOLD, STRICT_THRESHOLD) == (0.6, 0.8)


def test_normalize_title_keeps_only_lowercase_alphanumerics():
    assert normalize_title("  The Good, the BAD & the Ugly!\n(1966) ") == "the good the bad the ugly 1966"


def test_exact_title_bare_title_and_duplicates():
    m = TitleMatcher(TITLES)
    assert m.match("toy story (1995)") == 1  # two identical items: the lowest index wins
    assert m.match("TOY STORY") == 1  # bare title without the year
    assert m.match("Hamlet (1996)") == 7 and m.match("Hamlet (1948)") == 6
    assert m.match("Hamlet") == 6
    assert m.match("Toy Story (1995)", candidates=[3, 5]) == 5  # of identical titles, the candidate
    assert m.match("") is None and m.match("!!!") is None


def test_exact_item_id_forms():
    m = TitleMatcher(["Alpha", "Beta", "Gamma"], ids=["10", "20", "x7"])
    assert [m.match(t) for t in ("20", "item 20", "[x7]", "#10", "Item ID: 10")] == [2, 2, 3, 1, 1]
    assert TitleMatcher(["Alpha", "Beta"]).match("2") is None  # no ids: a number is not an item


def test_tfidf_cosine_matches_hand_computation():
    # "abcd" -> {abc, bcd}; "abce" -> {abc, bce}; n = 2, df(abc) = 2, df(bcd) = df(bce) = 1.
    m = TitleMatcher(["abcd", "abce"])
    idf_abc = math.log(3 / 3) + 1
    idf_rare = math.log(3 / 2) + 1
    norm = math.sqrt(idf_abc ** 2 + idf_rare ** 2)
    sims = m.similarity(["abc", "abcd", "zzz x"])
    np.testing.assert_allclose(sims[0], [idf_abc / norm, idf_abc / norm], rtol=1e-12)
    np.testing.assert_allclose(sims[1], [1.0, idf_abc ** 2 / norm ** 2], rtol=1e-12)
    np.testing.assert_allclose(sims[2], [0.0, 0.0])  # unknown trigrams are ignored
    # trigrams containing a space never count: "ab cd" has none of abc/bcd
    np.testing.assert_allclose(m.similarity(["ab cd"])[0], [0.0, 0.0])


def test_fuzzy_match_respects_threshold():
    m = TitleMatcher(["abcd", "abce"])
    cosine = (math.log(3 / 3) + 1) / math.sqrt(1 + (math.log(3 / 2) + 1) ** 2)  # ~0.53
    assert m.best("abc") == (1, pytest.approx(cosine))
    assert m.match("abc") is None  # below 0.6
    assert m.match("abc", threshold=0.5) == 1
    assert m.match("abcd!") == 1  # exact after normalisation


def test_fuzzy_matches_misspelled_titles():
    m = TitleMatcher(TITLES)
    assert m.match("Golden Eye") == 2
    assert m.match("Four Room") == 3
    assert m.match("Star Wars") is None


def test_candidates_are_tried_first():
    m = TitleMatcher(["Star Trek: First Contact", "Star Trek: Generations", "Toy Story"])
    text = "Star Trek First"
    best_anywhere, _ = m.best(text)
    assert best_anywhere == 1
    assert m.match(text, threshold=0.25) == 1
    assert m.match(text, candidates=[2, 3], threshold=0.25) == 2  # cosine 0.30 to item 2, 0.72 to item 1
    assert m.match("Toy Storyy", candidates=[1, 2]) == 3  # no candidate is close: whole catalogue
    with pytest.raises(ValueError, match="1..3"):
        m.match("Toy", candidates=[0, 4])


def test_split_list_formats():
    assert split_list("A Title<end>B, Title<end> C <end>") == ["A Title", "B, Title", "C"]
    assert split_list("Sure: <SOI>Heat<EOI> and <SOI>Casino<EOI>.") == ["Heat", "Casino"]
    assert split_list("1. Heat\n2) Casino\n- Fargo.\n* \"Se7en\"") == ["Heat", "Casino", "Fargo", "Se7en"]
    assert split_list("Heat; Casino;;Fargo") == ["Heat", "Casino", "Fargo"]
    assert split_list("Heat, Casino , Fargo") == ["Heat", "Casino", "Fargo"]
    assert split_list("") == [] and split_list(None) == []


def test_comma_pieces_rejoin_into_titles():
    m = TitleMatcher(TITLES)
    text = "Toy Story, The Good, The Bad and The Ugly, Hamlet (1996), Star Wars"
    assert m.split(text) == ["Toy Story", "The Good, The Bad and The Ugly", "Hamlet (1996)", "Star Wars"]
    assert m.match_list(text) == [1, 4, 7, None]
    assert m.match_list("1. Four Rooms\n2. Four Rooms\n3. Golden Eye") == [3, 3, 2]  # duplicates kept


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least one title"):
        TitleMatcher([])
    with pytest.raises(ValueError, match="one raw id per title"):
        TitleMatcher(["a"], ids=["1", "2"])
    with pytest.raises(ValueError, match="threshold"):
        TitleMatcher(["abc"], threshold=0)
    with pytest.raises(ValueError, match="threshold"):
        TitleMatcher(["abc"]).match("abc", threshold=1.5)
