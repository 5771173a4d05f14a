"""The paper's tables on the bundled models and the real data, written to results/ as Markdown + CSV.

T1 shared context (multiple choice, log-likelihood), T2 different contexts (SQuAD/NQ/HotpotQA F1/EM
with latency and bytes), T3 adapter sizes (from configs alone). Every table records its split, the
number of examples, the seed and a hash of the settings that produced it.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lcf_jax.eval import metrics

T2_SETS = {"squad": "test", "nq_openbook": "test", "hotpotqa": "test", "hotpotqa_supporting": "test"}
T1_SETS = {"mc/mmlu_redux": "test", "mc/arc_challenge": "test", "mc/arc_easy": "test", "mc/openbook_qa": "test"}


@dataclasses.dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str]
    settings: dict

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def markdown(self) -> str:
        fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else ("—" if v is None else str(v))  # noqa: E731
        lines = [f"## {self.name}", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes]
        lines += [f"- settings hash `{self.settings_hash()}`: `{json.dumps(self.settings, sort_keys=True, default=str)}`", ""]
        return "\n".join(lines)

    def write(self, out_dir: Path, stem: str) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{stem}.md").write_text(self.markdown())
        with (out_dir / f"{stem}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns + ["settings_hash"])
            for r in self.rows:
                w.writerow(list(r) + [self.settings_hash()])


# -- T3: sizes -----------------------------------------------------------------------------------
def table_sizes(pairs: Sequence[tuple[str, str]], dtype: str = "bfloat16", pruned_rank: int = 64) -> Table:
    from lcf_jax.adapters import C2CConfig, LCFConfig, LCFXConfig, size
    from lcf_jax.models.registry import PRESET_CONFIGS

    rows = []
    for s, r in pairs:
        sc, rc = PRESET_CONFIGS[s], PRESET_CONFIGS[r]
        c2c_mb = size.adapter_size_mb(C2CConfig(), sc, rc, dtype)
        lcf = LCFConfig()
        from lcf_jax.adapters.specs.lcf import adapter_layers
        layers = adapter_layers(lcf, sc, rc)[0]
        pruned = LCFConfig(layers=layers, ranks=(pruned_rank,) * len(layers))
        for name, cfg in [("C2C", C2CConfig()), ("LCF (r=256)", lcf), (f"LCF pruned (r={pruned_rank})", pruned),
                          ("LCF-X (r=256, m=16)", LCFXConfig())]:
            mb = size.adapter_size_mb(cfg, sc, rc, dtype)
            rows.append([f"{s} → {r}", name, size.adapter_param_count(cfg, sc, rc), mb, 100.0 * mb / c2c_mb])
    return Table("T3: adapter sizes (from configs, no weights)",
                 ["pair", "adapter", "parameters", f"MB ({dtype})", "% of C2C"], rows,
                 [f"MB = 10^6 bytes in {dtype}; C2C's paper figure for Qwen2.5-0.5B → Qwen3-0.6B is 956 MB.",
                  f"'LCF pruned' keeps every layer at rank {pruned_rank} (what `prune.py` yields at that target rank "
                  "when no gate is off); a trained adapter's pruning also drops layers whose gate is off."],
                 {"pairs": list(pairs), "dtype": dtype, "pruned_rank": pruned_rank})


# -- T1: shared context, multiple choice ---------------------------------------------------------
def mc_loglik(agent, question: str, choices: Sequence[str], prompt: Optional[str] = None) -> list[float]:
    """Sum of log-probabilities of each choice's tokens after the question (one batched forward); `prompt`: the text
    before the choices when it is not the question's MC prompt (the text-to-text row's).

    The LM head runs only on the positions that predict a choice token: Gemma3's 262k-word softmax over the
    whole prompt was most of the cost, and the scored log-probabilities are the same."""
    import jax.numpy as jnp

    from lcf_jax.eval import shared_mc
    prompt = agent.encode(shared_mc.MC_PROMPT.format(question=question) if prompt is None else prompt)
    rows = [prompt + agent.encode(" " + c, special=False) for c in choices]
    width = -(-max(len(r) - len(prompt) for r in rows) // 16) * 16   # scored positions, bucketed (few compiles)
    n = -(-max(max(len(r) for r in rows), len(prompt) + width) // 32) * 32
    toks = np.full((len(rows), n), agent.config.pad_token_id, np.int32)
    for i, r in enumerate(rows):
        toks[i, :len(r)] = r
    pos = np.broadcast_to(np.arange(n), toks.shape)
    mask = np.arange(n)[None] < np.array([len(r) for r in rows])[:, None]
    logp = np.asarray(shared_mc.choice_token_logprobs(agent.params, jnp.asarray(toks), jnp.asarray(pos),
                                                      jnp.asarray(mask), len(prompt), config=agent.config,
                                                      width=width))
    return [float(logp[i, :len(r) - len(prompt)].sum()) for i, r in enumerate(rows)]


def unrelated_index(n: int, i: int) -> int:
    """The control's pairing: question i of n is given the one half-way around its set (another question, same
    format)."""
    return (i + max(n // 2, 1)) % n


def unrelated_question(examples: Sequence[dict], i: int) -> str:
    return examples[unrelated_index(len(examples), i)]["question"]


def score_choices(examples: Sequence[dict], *, agent=None, adapter: Optional[dict] = None, control: bool = False,
                  messages=None, prefix=None):
    """(log-likelihood of each choice, each choice's token count >= 1) per example: by `agent` alone, or
    with an adapter (dict(setup, params, frozen, features)) fusing the sharer's cache into the receiver's, or by
    `agent` reading the sharer's text answer first (`messages()`: one per example, `text_mc`);
    control: the sharer reads an unrelated question of the same set instead (`unrelated_index`);
    prefix(example) -> a text read before the question: by `agent` itself, or with an adapter by the sharer alone
    (the hint probe, `eval/hint_probe.py`)."""
    from lcf_jax.eval import shared_mc, text_mc

    if control and ((adapter is None and messages is None) or len(examples) < 2):
        raise ValueError("the control needs an adapter or messages and at least two questions")
    if prefix is not None and (control or messages is not None):
        raise ValueError("a prefix is read instead of the question alone: not with a control or text messages")
    msgs = messages() if messages is not None else None
    lls, lens = [], []
    for i, e in enumerate(examples):
        if adapter is None:
            prompt = None
            if msgs is not None:
                prompt = text_mc.text_prompt(e["question"], msgs[unrelated_index(len(examples), i) if control else i])
            elif prefix is not None:
                prompt = prefix(e) + shared_mc.MC_PROMPT.format(question=e["question"])
            lls.append(mc_loglik(agent, e["question"], e["choices"], prompt))
            lens.append([max(len(agent.encode(" " + c, special=False)), 1) for c in e["choices"]])
        else:
            ll, n = shared_mc.mc_loglik_fused(adapter["setup"], adapter["params"], adapter["frozen"],
                                              adapter["features"], e["question"], e["choices"],
                                              unrelated_question(examples, i) if control else "",
                                              prefix(e) if prefix is not None else "")
            lls.append(ll)
            lens.append([max(x, 1) for x in n])
    return lls, lens


def scorer_fingerprint(agent=None, adapter: Optional[dict] = None) -> str:
    """What a row's scores depend on besides the questions: the model's name alone, or the adapter's pair and a
    hash of its parameters (a re-exported adapter at the same path gets a new fingerprint)."""
    import jax

    if adapter is None:
        return agent.name
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(adapter["params"]):
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    setup = adapter["setup"]
    return f"{setup.kind}:{setup.sharer.name}->{setup.receiver.name}:{h.hexdigest()[:16]}"


# The scoring code's version in every kept row's key: bump it when a change to how choices are scored (prompt,
# normalisation, fusion at evaluation) would change a kept row, so no stale row is reused.
SCORING_VERSION = 1


def row_key(fingerprint: str, name: str, split: str, examples: Sequence[dict]) -> dict:
    """What a kept row (or a text row's kept messages) is valid for: the scoring code, the scorer, the questions."""
    return {"scoring": SCORING_VERSION, "scorer": fingerprint, "set": name, "split": split, "n": len(examples),
            "questions": hashlib.sha256(json.dumps([e["question"] for e in examples]).encode()).hexdigest()[:16]}


def kept(rows_dir: Optional[Path], role: str, key: dict, suffix: str, make, what: str) -> dict:
    """make() -> a dict of a row's results for one set, kept in rows_dir/<role>__<set><suffix> and reused when its
    key is the same (rows kept before the scoring version existed read as version 1); rows_dir None keeps nothing."""
    from lcf_jax.fileio import atomic_write_text

    path = None
    if rows_dir is not None:
        slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in f"{role}__{key['set']}")
        path = Path(rows_dir) / f"{slug}{suffix}"
        if path.exists():
            found = json.loads(path.read_text())
            if {"scoring": 1, **found["key"]} == key:
                print(f"T1 {role} {key['set']}: reused {path}", flush=True)
                return found
    t0 = time.time()
    out = make()
    print(f"T1 {role} {key['set']}: {key['n']} {what} in {time.time() - t0:.0f} s", flush=True)
    if path is not None:
        atomic_write_text(path, json.dumps({"key": key, **out}))
    return out


def scored_rows(role: str, fingerprint: str, name: str, split: str, examples: Sequence[dict], score,
                rows_dir: Optional[Path] = None):
    """score(examples) -> (log-likelihoods, lengths), kept in rows_dir/<role>__<set>.json and reused when the
    scorer, the set, its split and its questions are the same: a long T1 run resumes where it stopped, and a
    new adapter row does not rescore the receiver alone."""
    def make():
        ll, lens = score(examples)
        return {"logliks": ll, "lengths": lens}
    out = kept(rows_dir, role, row_key(fingerprint, name, split, examples), ".json", make, "questions")
    return out["logliks"], out["lengths"]


def kept_messages(role: str, key: dict, make, rows_dir: Optional[Path] = None) -> list[str]:
    """make() -> the sharer's text answers of a set, kept beside the scored rows (rows_dir/<role>__<set>.messages.json)
    and reused when the key (sharer, receiver, prompts, set, split, questions) is the same."""
    return kept(rows_dir, role, key, ".messages.json", lambda: {"messages": make()}, "sharer answers")["messages"]


def set_free(score):
    """A scorer of examples alone as T1's rows call one: score(examples, name=set name, split=split)."""
    return lambda examples, name, split: score(examples)


def text_rows(role: str, sharer, receiver, rows_dir: Optional[Path]) -> list[tuple]:
    """T1's text-to-text row and its control, as `table_shared_context` entries: the sharer's answers to a set's
    questions are generated (or read back from rows_dir) once per set and shared by the two rows."""
    from lcf_jax.eval import text_mc

    fp = text_mc.fingerprint(sharer.name, receiver.name)
    per_set: dict = {}

    def messages(examples, name, split):
        if name not in per_set:
            answers = functools.partial(text_mc.sharer_answers, sharer, [e["question"] for e in examples])
            per_set[name] = functools.cache(functools.partial(kept_messages, role, row_key(fp, name, split, examples),
                                                              answers, rows_dir))
        return per_set[name]

    def score(examples, name, split, control=False):
        return score_choices(examples, agent=receiver, messages=messages(examples, name, split), control=control)

    return [(role, fp, score, None, None),
            (control_name(role), fp + ":control", functools.partial(score, control=True), None, role)]


def table_shared_context(agents: dict, sets: dict = T1_SETS, n: int = 100, data_dir=None,
                         adapters: Optional[dict] = None, rows_dir: Optional[Path] = None, controls: Sequence[str] = (),
                         texts: Optional[dict] = None) -> tuple[Table, list[dict]]:
    """T1. agents: row name -> Agent (each alone). adapters: row name -> dict(setup, params, frozen, features, mb),
    each scored with the sharer's cache fused into the receiver's (`eval/shared_mc.py`). texts: row name ->
    (sharer Agent, receiver Agent): the receiver reads the sharer's text answer before the choices (`eval/text_mc.py`),
    always followed by its control (the answer to an unrelated question).

    rows_dir: where each row's scores per set are kept and reused (`scored_rows`); None keeps nothing.
    controls: names of adapter rows each followed by its control, "<row> control (unrelated question)": the same
    adapter with the sharer reading another question of the set (`score_choices`); a gain the control shares is
    format, not information.
    Each cell is the accuracy with its 95% bootstrap interval; an adapter row also gets the paired difference
    against its receiver alone over every question of every set (the same questions, resampled together).
    Returns (the table, one result per row and set with the per-question correctness)."""
    from lcf_jax.data import sources
    from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference

    from lcf_jax.eval import text_mc

    adapters, texts = adapters or {}, texts or {}
    unknown = [c for c in controls if c not in adapters]
    if unknown:
        raise ValueError(f"controls {unknown} name no adapter row; rows: {list(adapters)}")
    # Every row: (name, what its scores depend on, score(examples, set name, split), adapter MB, the row it controls).
    entries = [(role, scorer_fingerprint(agent=agent), set_free(functools.partial(score_choices, agent=agent)), None,
                None) for role, agent in agents.items()]
    for role, a in adapters.items():
        fp = scorer_fingerprint(adapter=a)
        entries.append((role, fp, set_free(functools.partial(score_choices, adapter=a)), a["mb"], None))
        if role in controls:
            entries.append((control_name(role), fp + ":control",
                            set_free(functools.partial(score_choices, adapter=a, control=True)), a["mb"], role))
    receiver_of = {role: a["setup"].receiver.name for role, a in adapters.items()}
    for role, (sharer, receiver) in texts.items():
        entries += text_rows(role, sharer, receiver, rows_dir)
        receiver_of[role] = receiver.name
        controls = [*controls, role]
    results: list[dict] = []
    correct: dict[str, dict[str, list[float]]] = {}
    for name, split in sets.items():
        exs = sources.read(name, split, data_dir=data_dir, max_examples=n)
        golds = [int(e["gold"]) for e in exs]
        for role, fp, score, mb, of in entries:
            ll, lens = scored_rows(role, fp, name, split, exs, functools.partial(score, name=name, split=split),
                                   rows_dir)
            preds = metrics.mc_predictions(ll, True, lens)
            right = [100.0 * (p == g) for p, g in zip(preds, golds)]
            correct.setdefault(role, {})[name] = right
            results.append({"set": name, "split": split, "method": role, "n": len(right), "adapter_mb": mb,
                            "control_of": of, "accuracy": float(np.mean(right)), "correct_per_question": right,
                            "choice_per_question": [int(p) for p in preds],
                            "gold_logprob_per_question": metrics.mc_gold_logprob(ll, lens, golds)})
    receiver_alone = {agent.name: role for role, agent in agents.items()}
    pooled = lambda r: [x for s in sets for x in correct[r][s]]  # noqa: E731
    rows = []
    for role, _, _, mb, of in entries:
        cells = [format_interval(mean_interval(correct[role][s])) for s in sets]
        mean = float(np.mean([np.mean(correct[role][s]) for s in sets]))
        delta = vs_control = None
        receiver = receiver_of.get(of or role)
        if receiver is not None:
            alone = receiver_alone.get(receiver)
            if alone is not None:
                delta = format_interval(paired_difference(pooled(role), pooled(alone)))
            if role in controls:
                vs_control = format_interval(paired_difference(pooled(role), pooled(control_name(role))))
        rows.append([role] + cells + [mean, delta] + ([vs_control] if controls else []) + [mb])
    missing = [m for m in ("C2C", "LCF", "LCF pruned") if not any(r.startswith(m) for r in adapters)]
    for method in ([] if texts else ["text-to-text"]) + missing:
        rows.append([method] + [None] * (len(sets) + 3 + bool(controls)))
    notes = [f"accuracy (%) by length-normalised log-likelihood of each choice, with its 95% bootstrap interval, first "
             f"{n} rows of each test split (index % 2 == 1); mean: of the sets. Δ vs receiver alone: the paired "
             "bootstrap over every question of every set against the adapter's receiver alone. Adapter rows: both "
             "models read the question prompt; the receiver scores each choice on its cache fused with the sharer's "
             "(the training forward, evaluation mode).",
             *(["Each adapter row's control: the same adapter with the sharer reading another question of the same set "
                "(the one half-way around it), cut or repeated to the length of its own reading, while the receiver "
                "reads its own; Δ vs its control: paired over every question. A gain the control shares is format, "
                "not information."] if controls else []),
             ("Text-to-text rows: the sharer's greedy answer to the question prompt (first line, at most "
              f"{text_mc.MAX_NEW_TOKENS} tokens), read by the receiver before it scores the choices "
              f"({text_mc.TEXT_MC_PROMPT!r}); its control gives the receiver the sharer's answer to the unrelated "
              "question. Both models read the question but not the choices, so the answer carries what the sharer "
              "knows, which its cache of the question may not." if texts else
              "text-to-text is empty: not asked for (--t1-text SHARER:RECEIVER scores it). Both models read the "
              "question, but not the choices (each choice is scored as a continuation), so the sharer's cache holds "
              "its reading of the question only; the text row gives the receiver the sharer's own answer.")
             + (f" Rows without numbers ({', '.join(missing)}): no such adapter was given." if missing else "")]
    table = Table("T1: shared context, multiple choice (test splits)",
                  ["method"] + [s.split("/")[-1] for s in sets] + ["mean", "Δ vs receiver alone"]
                  + (["Δ vs its control"] if controls else []) + ["adapter MB"],
                  rows, notes, {"sets": sets, "n": n, "agents": {k: v.name for k, v in agents.items()},
                                "adapters": {k: a.get("source", "") for k, a in adapters.items()},
                                "controls": list(controls),
                                **({"texts": {k: f"{s_.name} -> {r_.name}" for k, (s_, r_) in texts.items()}}
                                   if texts else {})})
    return table, results


def control_name(role: str) -> str:
    return f"{role} control (unrelated question)"


def plot_size_accuracy(results: list[dict], out: Path) -> None:
    """T1's adapters: mean accuracy over the sets against adapter size (log scale), each receiver alone a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in results if not r.get("control_of")))
    mean = {m: float(np.mean([r["accuracy"] for r in results if r["method"] == m])) for m in methods}
    mb = {r["method"]: r["adapter_mb"] for r in results}
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        if mb[m] is None:
            ax.axhline(mean[m], linestyle="--", linewidth=0.8, color="gray")
            ax.annotate(m, (0.01, mean[m]), xycoords=("axes fraction", "data"), fontsize=6)
        else:
            ax.scatter([mb[m]], [mean[m]])
            ax.annotate(m, (mb[m], mean[m]), fontsize=6)
    ax.set_xscale("log")
    ax.set(xlabel="adapter size (MB, log scale)", ylabel="mean accuracy over the sets (%)",
           title="Accuracy against adapter size (T1)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- T2: different contexts -----------------------------------------------------------------------
def select_context_prompt(session, n: int = 30, data_dir=None) -> dict:
    """Chooses the oracle/text context prompt (0-shot or 1-shot) by oracle F1 on SQuAD *dev*, then freezes
    it on the session. Returns the dev scores of each candidate."""
    from lcf_jax.comm.protocols import tasks_from_examples
    from lcf_jax.data import sources

    tasks = tasks_from_examples(sources.read("squad", "dev", data_dir=data_dir, max_examples=n))
    scores = {}
    for name in ("context_0shot", "context_1shot"):
        session.context_prompt = name
        replies = session.oracle(tasks)
        scores[name] = float(metrics.squad_scores([r.answer for r in replies], [list(t.answers) for t in tasks])["f1"])
    session.context_prompt = max(scores, key=scores.get)
    return scores

def lcfx_label(cfg, name: str = "") -> str:
    """Row label of an LCF-X adapter: its slots and pooling kind (and a name when several are compared)."""
    kind = "conditioned" if cfg.conditioned else "unconditioned"
    if getattr(cfg, "pooling", "attention") == "window":
        kind = "window" if cfg.conditioned else "window, unconditioned"
    return f"LCF-X{' ' + name if name else ''} (m={cfg.slots}, {kind})"


TEXT_PROMPTS = {"summary": False, "question-aware": True}   # label -> Session.text(with_question=...)


def table_cross_context(session, sets: dict = T2_SETS, n: int = 50, budgets=(32, 64, 128), latency_repeats: int = 3,
                        data_dir=None, seed: int = 0, adapters: Optional[dict] = None,
                        text_prompts: Sequence[str] = ("summary", "question-aware"),
                        log=None, progress_path: Optional[Path] = None) -> tuple[Table, list[dict]]:
    """Receiver alone, text (B tokens, each sharer prompt), LCF-X (+ control), oracle on each set: F1/EM
    with 95% bootstrap intervals, the paired F1 difference against the receiver alone (and, for LCF-X,
    against its own unrelated-passage control), latency, bytes. Per-question scores are in the results.

    LCF-X rows come from `session.adapter` and from `adapters` (name -> (LCFXConfig, params)): each
    adapter gets its own row and its own unrelated-passage control row."""
    from lcf_jax.comm.protocols import run_protocol, tasks_from_examples
    from lcf_jax.data import sources

    results: list[dict] = []
    methods: list[tuple[str, Any, str, dict]] = [("receiver alone", session, "alone", {})]
    methods += [(f"text (B={b}, {name})", session, "text", {"budget": b, "with_question": TEXT_PROMPTS[name]})
                for b in budgets for name in text_prompts]
    lcfx_sessions = ({"": session} if session.adapter is not None else {}) | {
        name: dataclasses.replace(session, adapter=a) for name, a in (adapters or {}).items()}
    for name, sess in lcfx_sessions.items():
        label = lcfx_label(sess.adapter[0], name)
        methods += [(label, sess, "lcfx", {}), (f"{label} control (unrelated passage)", sess, "lcfx_control", {})]
    methods.append(("oracle (receiver reads the passage)", session, "oracle", {}))
    for set_name, split in sets.items():
        tasks = tasks_from_examples(sources.read(set_name, split, data_dir=data_dir, max_examples=n))
        for label, sess, proto, kw in methods:
            t0 = time.perf_counter()
            replies = run_protocol(sess, proto, tasks, **kw)
            answers = [r.answer for r in replies]
            f1s = [100.0 * metrics.f1(a, t.answers) for a, t in zip(answers, tasks)]
            ems = [100.0 * metrics.exact_match(a, t.answers) for a, t in zip(answers, tasks)]
            lat = sess.time_one(proto, tasks[0], repeats=latency_repeats, **({"budget": kw["budget"]} if kw else {}))
            results.append({"set": set_name, "split": split, "method": label, "protocol": proto, **kw,
                            "f1": float(np.mean(f1s)), "em": float(np.mean(ems)), "n": len(tasks),
                            "f1_per_question": f1s, "em_per_question": ems, "answers": answers,
                            "bytes": statistics.median(r.bytes_sent for r in replies),
                            "latency_s": float(sum(lat.values())), "phases": lat,
                            "eval_seconds": time.perf_counter() - t0})
            if log is not None:
                log(f"T2 {set_name} {label}: F1 {results[-1]['f1']:.1f} EM {results[-1]['em']:.1f} (n={len(tasks)})")
            if progress_path is not None:   # every finished row is kept, even if a later one fails
                Path(progress_path).write_text(json.dumps(results, indent=1))
    settings = {"sets": sets, "n": n, "budgets": list(budgets), "text_prompts": list(text_prompts), "seed": seed,
                "sharer": session.sharer.name if session.sharer else None,
                "receiver": session.receiver.name, "max_new_tokens": session.max_new_tokens,
                "context_prompt": session.context_prompt,
                "adapters": {lcfx_label(sess.adapter[0], name): dataclasses.asdict(sess.adapter[0])
                             for name, sess in lcfx_sessions.items()}}
    return t2_table(results, settings), results


def t2_table(results: list[dict], settings: dict) -> Table:
    """The T2 table of per-question results (`table_cross_context`'s, or a saved or partial .json of them)."""
    from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference

    rows = []
    for r in results:
        same_set = [x for x in results if x["set"] == r["set"]]
        text_ref = [x for x in same_set if x["protocol"] == "text" and x.get("budget") == 64]
        speedup = (text_ref[0]["latency_s"] / r["latency_s"]) if text_ref and r["latency_s"] > 0 else None
        alone = next((x for x in same_set if x["protocol"] == "alone"), None)
        control = next((x for x in same_set if x["protocol"] == "lcfx_control"
                        and x["method"] == f"{r['method']} control (unrelated passage)"), None)
        rows.append([r["set"], r["method"], format_interval(mean_interval(r["f1_per_question"])),
                     format_interval(mean_interval(r["em_per_question"])),
                     None if alone is None or r is alone else
                     format_interval(paired_difference(r["f1_per_question"], alone["f1_per_question"])),
                     None if control is None else format_interval(paired_difference(r["f1_per_question"],
                                                                        control["f1_per_question"])),
                     None if not text_ref or r is text_ref[0] or r["protocol"] not in ("lcfx", "lcfx_control") else
                     format_interval(paired_difference(r["f1_per_question"], text_ref[0]["f1_per_question"])),
                     r["latency_s"], speedup, r["bytes"]])
    n = settings.get("n")
    notes = [f"first {n} examples of each test split; greedy decoding, at most {settings.get('max_new_tokens')} answer "
             f"tokens, answers cut at the first newline; text and oracle prompts: `{settings.get('context_prompt')}` "
             "(chosen on the dev split). F1/EM: mean [95% percentile bootstrap interval, 10,000 resamples]; ΔF1: paired "
             "bootstrap over the same questions.",
             "text (B, summary): the sharer summarises its passage in at most B tokens; (B, question-aware): it is also "
             "given the question and writes the facts needed to answer it.",
             "latency: one question at batch 1, median of repeated runs after a compiling run, phases summed "
             "(sharer prefill/decode, adapter, receiver prefill/decode); speed-up is against the first text (B=64) row "
             "measured in the same run.",
             "bytes: median bytes crossing from sharer to receiver per question (UTF-8 text, or the float32 latent "
             "message)."]
    return Table(f"T2: different contexts, {settings.get('sharer')} → {settings.get('receiver')}",
                 ["set", "method", "F1", "EM", "ΔF1 vs alone", "ΔF1 vs control", "ΔF1 vs text B=64", "latency (s)",
                  "speed-up vs text B=64", "bytes/message"], rows, notes, settings)


def plot_f1_latency(results: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for set_name in sorted({r["set"] for r in results}):
        rs = [r for r in results if r["set"] == set_name]
        ax.scatter([r["latency_s"] for r in rs], [r["f1"] for r in rs], label=set_name)
        for r in rs:
            ax.annotate(r["method"].split(" (")[0] + (f" B={r['budget']}" if "budget" in r else ""),
                        (r["latency_s"], r["f1"]), fontsize=6)
    ax.set(xlabel="latency per question (s, CPU)", ylabel="F1", title="F1 against latency (T2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_sizes(table: Table, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r[0].split(' → ')[0][:8]}→{r[0].split(' → ')[1][:8]}\n{r[1]}" for r in table.rows]
    ax.barh(range(len(labels)), [r[3] for r in table.rows])
    ax.set_yticks(range(len(labels)), labels, fontsize=5)
    ax.set_xscale("log")
    ax.set(xlabel="adapter size (MB, log scale)", title="Adapter size (T3)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
