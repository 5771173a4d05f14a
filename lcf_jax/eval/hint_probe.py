"""The hint probe: can a shared-context adapter's message carry an answer the sharer has and the receiver has not?

T1's questions are read by both models, so its rows cannot tell what the message carries from what the adapter
does to the receiver when a matching message arrives (a trained-against control cannot either). Here the sharer
alone reads a hint before the question, `Hint: the answer is {choice}.` with the gold choice or a wrong one, and the
receiver reads the question only, scoring the choices as T1 does. Its cache of the question has attended to the hint
(`SharedContextFeatures.tokenize_sharer_prefixed`), so a message that carries the sharer's reading moves the
receiver towards the hinted choice: gold − wrong is what the channel carries, 0 for a channel that carries nothing.
No adapter was trained on hints. Each model alone reading the hint itself gives what the hint is worth when it is
read directly.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np

from lcf_jax.eval import metrics
from lcf_jax.eval.tables import Table, score_choices, scored_rows, scorer_fingerprint

HINT = "Hint: the answer is {answer}.\n"
HINT_SETS = {"mc/mmlu_redux": "dev", "mc/arc_challenge": "dev", "mc/arc_easy": "dev", "mc/openbook_qa": "dev"}
HINTS = ("none", "gold", "wrong")


def hinted_choice(example: dict, hint: str) -> Optional[str]:
    """The choice the hint names: the gold one, a wrong one (the next choice after the gold), or None."""
    if hint == "none":
        return None
    k, gold = len(example["choices"]), int(example["gold"])
    if hint == "gold":
        return example["choices"][gold]
    if hint == "wrong":
        return example["choices"][(gold + 1) % k]
    raise ValueError(f"hint must be one of {HINTS}, got {hint!r}")


def hint_text(example: dict, hint: str) -> str:
    answer = hinted_choice(example, hint)
    return "" if answer is None else HINT.format(answer=answer)


def table_hint_probe(agents: dict, adapters: dict, sets: dict = HINT_SETS, n: int = 100, data_dir=None,
                     rows_dir: Optional[Path] = None) -> tuple[Table, list[dict]]:
    """agents: row name -> Agent (each alone reads the hint itself); adapters: row name -> dict(setup, params, frozen,
    features) (the sharer reads the hint). One row per subject: accuracy with no hint, the gold hint and a wrong hint
    (pooled over the sets, 95% bootstrap), gold − wrong and gold − none paired over every question of every set, and
    the gold choice's log-probability, gold hint − wrong hint, paired.
    Returns (the table, one result per subject, hint and set with the per-question correctness)."""
    from lcf_jax.data import sources
    from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference

    # A model alone reads the hint itself; with an adapter the sharer reads it (`tables.score_choices(prefix=...)`).
    subjects = [(name, scorer_fingerprint(agent=a), functools.partial(score_choices, agent=a))
                for name, a in agents.items()]
    subjects += [(name, scorer_fingerprint(adapter=a), functools.partial(score_choices, adapter=a))
                 for name, a in adapters.items()]
    results: list[dict] = []
    correct: dict = {}   # (subject, hint) -> correctness over every question, sets in order
    gold_lp: dict = {}    # (subject, hint) -> the gold choice's log-probability over every question
    for set_name, split in sets.items():
        exs = sources.read(set_name, split, data_dir=data_dir, max_examples=n)
        golds = [int(e["gold"]) for e in exs]
        for name, fp, score in subjects:
            for hint in HINTS:
                role = name if hint == "none" else f"{name} [hint: {hint}]"
                ll, lens = scored_rows(role, f"{fp}:hint-{hint}", set_name, split, exs,
                                       functools.partial(score, prefix=functools.partial(hint_text, hint=hint)),
                                       rows_dir)
                preds = metrics.mc_predictions(ll, True, lens)
                right = [100.0 * (p == g) for p, g in zip(preds, golds)]
                hinted = [None if hint == "none" else e["choices"].index(hinted_choice(e, hint)) for e in exs]
                lp = metrics.mc_gold_logprob(ll, lens, golds)
                correct.setdefault((name, hint), []).extend(right)
                gold_lp.setdefault((name, hint), []).extend(lp)
                results.append({"set": set_name, "split": split, "method": name, "hint": hint, "n": len(right),
                                "accuracy": float(np.mean(right)), "correct_per_question": right,
                                "choice_per_question": [int(p) for p in preds], "hinted_per_question": hinted,
                                "gold_logprob_per_question": lp})
    rows = []
    for name, _, _ in subjects:
        cells = [format_interval(mean_interval(correct[(name, h)])) for h in HINTS]
        rows.append([name, "sharer" if name in adapters else "itself"] + cells
                    + [format_interval(paired_difference(correct[(name, "gold")], correct[(name, "wrong")])),
                       format_interval(paired_difference(correct[(name, "gold")], correct[(name, "none")])),
                       "{:.4f} [{:.4f}, {:.4f}]".format(*paired_difference(gold_lp[(name, "gold")],
                                                                           gold_lp[(name, "wrong")]))])
    notes = [f"accuracy (%) by length-normalised log-likelihood of each choice, pooled over the first {n} rows of "
             f"each set ({', '.join(f'{s} {sp}' for s, sp in sets.items())}), 95% bootstrap intervals; differences "
             "paired over the same questions.",
             f"The hint {HINT.strip()!r} is read before the question prompt: by the model itself in a model-alone row, "
             "by the sharer only in an adapter row (the receiver reads the question alone and scores the choices on "
             "its cache fused with the sharer's). The wrong hint names the choice after the gold one.",
             "gold − wrong is what reaches the receiver: 0 for a message that carries nothing of the sharer's reading. "
             "No adapter was trained with hints. Gold log-prob: the gold choice's log-probability under the softmax "
             "over the length-normalised scores (`metrics.mc_gold_logprob`), gold hint − wrong hint, paired: it moves "
             "before accuracy does."]
    table = Table("Hint probe: what a shared-context message carries",
                  ["subject", "reads the hint", "no hint", "gold hint", "wrong hint", "gold − wrong", "gold − none",
                   "gold log-prob, gold − wrong"],
                  rows, notes, {"sets": sets, "n": n, "hint": HINT, "agents": {k: v.name for k, v in agents.items()},
                                "adapters": {k: a.get("source", "") for k, a in adapters.items()}})
    return table, results
