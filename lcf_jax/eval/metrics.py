"""Metrics: SQuAD v1.1 EM / F1 (the official script's normalisation), MC accuracy, message bytes.

`normalize_answer`, `exact_match` and `f1` follow `evaluate-v1.1.py` of SQuAD exactly, including
its corner case: an empty normalised prediction or reference scores F1 0 (v1.1 has no special
case for empty strings, unlike v2.0).
"""
from __future__ import annotations

import collections
import math
import re
import string
from typing import Any, Optional, Sequence

import numpy as np

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (SQuAD v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1_single(prediction: str, reference: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    common = collections.Counter(pred_tokens) & collections.Counter(ref_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _references(answers) -> list[str]:
    if isinstance(answers, str):
        answers = [answers]
    answers = list(answers)
    if not answers:
        raise ValueError("an example needs at least one reference answer")
    return answers


def exact_match(prediction: str, answers: Sequence[str] | str) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    p = normalize_answer(prediction)
    return float(max(p == normalize_answer(a) for a in _references(answers)))


def f1(prediction: str, answers: Sequence[str] | str) -> float:
    """Token F1 in [0, 1], the max over references."""
    return max(_f1_single(prediction, a) for a in _references(answers))


def squad_scores(predictions: Sequence[str], answers_list: Sequence[Sequence[str]]) -> dict:
    """{"em": %, "f1": %, "n": count} over aligned predictions and reference lists."""
    if len(predictions) != len(answers_list):
        raise ValueError(f"{len(predictions)} predictions for {len(answers_list)} examples")
    n = len(predictions)
    if n == 0:
        return {"em": float("nan"), "f1": float("nan"), "n": 0}
    em = sum(exact_match(p, a) for p, a in zip(predictions, answers_list))
    f = sum(f1(p, a) for p, a in zip(predictions, answers_list))
    return {"em": 100.0 * em / n, "f1": 100.0 * f / n, "n": n}


def mc_predictions(loglik_per_choice: Sequence[Sequence[float]],
                   normalize_by_length: bool = False,
                   choice_lengths: Optional[Sequence[Sequence[float]]] = None) -> list[int]:
    """Index of the best choice per question (ties go to the lowest index).

    With `normalize_by_length`, each log-likelihood is divided by its `choice_lengths` entry
    (tokens or characters: the caller decides, and should report which).
    """
    if normalize_by_length and choice_lengths is None:
        raise ValueError("normalize_by_length=True needs choice_lengths")
    preds = []
    for i, ll in enumerate(loglik_per_choice):
        scores = np.asarray(ll, dtype=np.float64)
        if scores.ndim != 1 or scores.size == 0:
            raise ValueError(f"question {i}: expected a non-empty list of per-choice scores")
        if normalize_by_length:
            lengths = np.asarray(choice_lengths[i], dtype=np.float64)
            if lengths.shape != scores.shape or np.any(lengths <= 0):
                raise ValueError(f"question {i}: choice_lengths must be positive, one per choice")
            scores = scores / lengths
        preds.append(int(np.argmax(scores)))
    return preds


def mc_accuracy(loglik_per_choice: Sequence[Sequence[float]], gold: Sequence[int],
                normalize_by_length: bool = False,
                choice_lengths: Optional[Sequence[Sequence[float]]] = None) -> float:
    """Accuracy in percent: argmax over per-choice log-likelihoods against `gold` indices.

    Questions may have different numbers of choices.
    """
    if len(loglik_per_choice) != len(gold):
        raise ValueError(f"{len(loglik_per_choice)} score lists for {len(gold)} gold labels")
    if not gold:
        return float("nan")
    preds = mc_predictions(loglik_per_choice, normalize_by_length, choice_lengths)
    return 100.0 * sum(int(p == int(g)) for p, g in zip(preds, gold)) / len(gold)


def _bits_per_element(dtype: Any) -> int:
    import ml_dtypes

    dt = np.dtype(dtype)
    if dt.kind in "iub" or dt.name.startswith(("int", "uint")):
        try:
            return int(ml_dtypes.iinfo(dt).bits)
        except Exception:
            pass
    try:
        return int(ml_dtypes.finfo(dt).bits)
    except Exception:
        return 8 * dt.itemsize


def message_bytes(tree: Any) -> int:
    """Bytes to send `tree`: the sum over its array leaves of ceil(size * bits / 8).

    Works for numpy and JAX arrays, `jax.ShapeDtypeStruct`s and pytrees of them. Sub-byte dtypes
    (int4, int2, float4) count as packed (int4: half a byte per element), which is what a
    transport would send; numpy itself stores them one per byte.
    """
    import jax

    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        if not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        size = int(math.prod(leaf.shape))
        total += (size * _bits_per_element(leaf.dtype) + 7) // 8
    return total


def mc_gold_logprob(loglik_per_choice: Sequence[Sequence[float]], choice_lengths: Sequence[Sequence[float]],
                    golds: Sequence[int]) -> list[float]:
    """Per question, the log-probability of the gold choice under the softmax over the length-normalised
    log-likelihoods (the scores `mc_predictions` ranks): a continuous score that moves before accuracy does."""
    out = []
    for ll, lens, g in zip(loglik_per_choice, choice_lengths, golds, strict=True):
        s = np.asarray(ll, np.float64) / np.asarray(lens, np.float64)
        out.append(float(s[g] - np.logaddexp.reduce(s)))
    return out
