import re
import string

import numpy as np
import pytest

from lcf_jax.eval import metrics


def _official_normalize(s):
    # Verbatim logic of SQuAD's evaluate-v1.1.py.
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


@pytest.mark.parametrize("raw,expected", [
    ("The Cat!", "cat"),
    ("  A  quick, brown fox. ", "quick brown fox"),
    ("an apple", "apple"),
    ("theater", "theater"),          # articles only as whole words
    ("Hello-world", "helloworld"),   # punctuation is removed, not replaced by a space
    ("the the", ""),
    ("Denver Broncos", "denver broncos"),
    ("Saint-Étienne (France)", "saintétienne france"),
])
def test_normalize_answer(raw, expected):
    assert metrics.normalize_answer(raw) == expected
    assert _official_normalize(raw) == expected


def test_normalize_matches_official_on_random_strings():
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzTHEAN .,!?'-\"()\t\n") + ["the", "a", "an", " The "]
    for _ in range(300):
        s = "".join(rng.choice(alphabet, size=rng.integers(0, 30)))
        assert metrics.normalize_answer(s) == _official_normalize(s)


def test_exact_match_is_max_over_references():
    assert metrics.exact_match("denver broncos.", ["Carolina Panthers", "The Denver Broncos"]) == 1.0
    assert metrics.exact_match("Broncos", ["Carolina Panthers", "Denver Broncos"]) == 0.0
    assert metrics.exact_match("the Cat", "cat") == 1.0


def test_f1_by_hand():
    # pred {big, cat} vs ref {cat, sat}: P = R = 1/2
    assert metrics.f1("the big cat", ["a cat sat"]) == pytest.approx(0.5)
    # P = 2/3, R = 1 -> 0.8
    assert metrics.f1("Denver Broncos win", ["Denver Broncos"]) == pytest.approx(0.8)
    # repeated tokens count once per match: P = 1/2, R = 1 -> 2/3
    assert metrics.f1("cat cat", ["cat"]) == pytest.approx(2 / 3)
    # max over references: 0 against the first, P = 1, R = 1/2 -> 2/3 against the second
    assert metrics.f1("Broncos", ["Carolina Panthers", "Denver Broncos"]) == pytest.approx(2 / 3)
    assert metrics.f1("nothing shared", ["Denver Broncos"]) == 0.0
    # v1.1 corner case: an empty normalised prediction scores 0
    assert metrics.f1("the", ["the"]) == 0.0
    assert metrics.exact_match("the", ["a"]) == 1.0


def test_squad_scores():
    preds = ["Denver Broncos", "the big cat", "x"]
    answers = [["Denver Broncos", "Broncos"], ["a cat sat"], ["y"]]
    s = metrics.squad_scores(preds, answers)
    assert s["n"] == 3
    assert s["em"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    with pytest.raises(ValueError):
        metrics.squad_scores(["a"], [])
    with pytest.raises(ValueError):
        metrics.squad_scores(["a"], [[]])


def test_mc_accuracy():
    ll = [[-1.0, -2.0, -3.0], [-5.0, -4.0], [-2.0, -2.0, -9.0, -1.5]]
    assert metrics.mc_accuracy(ll, [0, 1, 3]) == pytest.approx(100.0)
    assert metrics.mc_accuracy(ll, [1, 1, 0]) == pytest.approx(100 / 3)
    # length normalisation flips question 0: -1/1 = -1 vs -2/4 = -0.5
    lengths = [[1, 4, 1], [1, 1], [1, 1, 1, 1]]
    assert metrics.mc_predictions(ll, normalize_by_length=True, choice_lengths=lengths)[0] == 1
    assert metrics.mc_accuracy(ll, [1, 1, 3], normalize_by_length=True,
                               choice_lengths=lengths) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        metrics.mc_accuracy(ll, [0, 1, 3], normalize_by_length=True)
    # ties go to the lowest index
    assert metrics.mc_predictions([[-1.0, -1.0]]) == [0]


def test_message_bytes():
    import jax
    import jax.numpy as jnp
    import ml_dtypes

    assert metrics.message_bytes(np.zeros((3, 5), np.float32)) == 60
    assert metrics.message_bytes(jnp.zeros((3, 5), jnp.bfloat16)) == 30
    assert metrics.message_bytes(np.zeros((7,), ml_dtypes.float8_e4m3fn)) == 7
    assert metrics.message_bytes(np.zeros((5,), ml_dtypes.int4)) == 3  # packed: ceil(20 bits / 8)
    tree = {"k": np.zeros((2, 4), np.float16), "v": [jax.ShapeDtypeStruct((2, 4), jnp.float16)]}
    assert metrics.message_bytes(tree) == 32


def test_gold_logprob_is_the_log_softmax_of_the_length_normalised_scores_at_the_gold_choice():
    ll, lengths = [[-2.0, -2.0, -2.0, -2.0], [-4.0, -1.0]], [[1, 1, 1, 1], [4, 1]]
    got = metrics.mc_gold_logprob(ll, lengths, [3, 0])
    assert got[0] == pytest.approx(np.log(0.25)) and got[1] == pytest.approx(np.log(0.5))   # -4/4 == -1/1
    with pytest.raises(ValueError):
        metrics.mc_gold_logprob(ll, lengths, [0])   # one gold per question
