"""The reproduction tables end to end on tiny models (real data files, a few examples each)."""
import json

import jax
import pytest

from lcf_jax.adapters import LCFXConfig, init_lcfx
from lcf_jax.comm import protocols
from lcf_jax.data import sources
from lcf_jax.eval import tables as R
from tests.comm.tiny_agents import tiny_agent

pytestmark = pytest.mark.skipif(not sources.resolve_data_dir().exists(), reason="../shared/data is absent")


@pytest.fixture(scope="module")
def session():
    sharer, receiver = tiny_agent("tiny-llama", bos=False), tiny_agent("tiny-gemma3", bos=True, seed=1)
    cfg = LCFXConfig(rank=16, slots=4, pool_heads=2)
    params = init_lcfx(jax.random.PRNGKey(0), cfg, sharer.config, receiver.config)
    return protocols.Session(receiver=receiver, sharer=sharer, adapter=(cfg, params), max_new_tokens=3,
                             max_context_tokens=48, batch_size=4)


def _mean(cell: str) -> float:
    """The mean of a "mean [low, high]" cell."""
    return float(cell.split(" [")[0])


def test_t2_writes_markdown_csv_and_plot(session, tmp_path):
    scores = R.select_context_prompt(session, n=2)
    assert set(scores) == {"context_0shot", "context_1shot"} and session.context_prompt in scores
    other = LCFXConfig(rank=16, slots=2, pool_heads=2, conditioned=True)
    other_params = init_lcfx(jax.random.PRNGKey(1), other, session.sharer.config, session.receiver.config)
    window = LCFXConfig(rank=16, slots=3, pool_heads=2, conditioned=True, pooling="window", locator_rank=8,
                        injection="positioned", decoder="embed", embed_hidden=16)
    window_params = init_lcfx(jax.random.PRNGKey(2), window, session.sharer.config, session.receiver.config)
    table, results = R.table_cross_context(session, {"squad": "test"}, n=3, budgets=(4,), latency_repeats=1,
                                           adapters={"u2": (other, other_params), "w3": (window, window_params)})
    methods = [r[1] for r in table.rows]
    assert methods[0] == "receiver alone" and "LCF-X (m=4, unconditioned)" in methods
    assert methods[1:3] == ["text (B=4, summary)", "text (B=4, question-aware)"]
    assert "LCF-X u2 (m=2, conditioned)" in methods and "LCF-X u2 (m=2, conditioned) control (unrelated passage)" in methods
    assert "LCF-X w3 (m=3, window)" in methods
    assert sum("control" in m for m in methods) == 3 and methods[-1].startswith("oracle")
    assert [r for r in table.rows if r[1].startswith("LCF-X u2 (m=2")][0][9] == 2 * 16 * 4
    assert set(table.settings["adapters"]) == {"LCF-X (m=4, unconditioned)", "LCF-X u2 (m=2, conditioned)",
                                               "LCF-X w3 (m=3, window)"}
    assert all(0 <= _mean(r[2]) <= 100 and 0 <= _mean(r[3]) <= 100 for r in table.rows)
    lcfx_row = [r for r in table.rows if r[1].startswith("LCF-X (m=4")][0]
    assert lcfx_row[9] == 4 * 16 * 4  # bytes of the float32 message
    assert table.rows[0][4] is None and all(r[4] is not None for r in table.rows[1:])     # ΔF1 vs alone
    assert lcfx_row[5] is not None and table.rows[0][5] is None                         # ΔF1 vs its control
    for r in results:
        assert len(r["f1_per_question"]) == len(r["em_per_question"]) == r["n"] == 3
        assert abs(sum(r["f1_per_question"]) / 3 - r["f1"]) < 1e-9
    table.write(tmp_path, "t2")
    assert "| squad | receiver alone |" in (tmp_path / "t2.md").read_text()
    assert (tmp_path / "t2.csv").read_text().count("\n") == len(table.rows) + 1
    R.plot_f1_latency(results, tmp_path / "f1.png")
    assert (tmp_path / "f1.png").stat().st_size > 1000
    json.dumps(results)


def test_t1_and_t3(session, tmp_path):
    t1, res = R.table_shared_context({"tiny alone": session.receiver}, {"mc/arc_easy": "test"}, n=3)
    assert len(res) == 1 and res[0]["n"] == 3 and set(res[0]["correct_per_question"]) <= {0.0, 100.0}
    assert t1.rows[0][1].startswith(f"{res[0]['accuracy']:.1f} [") and t1.rows[0][2] == res[0]["accuracy"]
    t3 = R.table_sizes([("smollm2-135m-instruct", "gemma3-270m")])
    c2c = [r for r in t3.rows if r[1] == "C2C"][0]
    assert c2c[4] == 100.0 and all(r[4] < 5 for r in t3.rows if r[1] != "C2C")
    t3.write(tmp_path, "t3")
    R.plot_sizes(t3, tmp_path / "sizes.png")
    assert (tmp_path / "sizes.png").exists()


def test_mc_loglik_equals_the_full_softmax_over_every_position(session):
    """The LM head on the choice positions only gives the log-likelihoods the whole-sequence softmax gives."""
    import jax.numpy as jnp
    import numpy as np

    from lcf_jax.models import transformer
    agent = session.receiver
    question, choices = "Which is a fruit?", ["apple", "a long answer about stones and rocks", "x"]
    got = R.mc_loglik(agent, question, choices)
    prompt = agent.encode(f"Question: {question}\nAnswer:")
    for c, ll in zip(choices, got):
        row = prompt + agent.encode(" " + c, special=False)
        logits, _ = transformer.forward(agent.params, jnp.asarray([row]), jnp.arange(len(row))[None], config=agent.config)
        logp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
        want = sum(logp[i - 1, row[i]] for i in range(len(prompt), len(row)))
        assert abs(ll - want) < 1e-3 * max(1.0, abs(want)), (c, ll, want)


def test_t1_rows_are_kept_and_reused_only_for_the_same_scorer(session, tmp_path, capsys):
    agents = {"tiny alone": session.receiver}
    first, res = R.table_shared_context(agents, {"mc/arc_easy": "test"}, n=3, rows_dir=tmp_path)
    kept = list(tmp_path.glob("*.json"))
    assert len(kept) == 1 and "reused" not in capsys.readouterr().out
    again, res2 = R.table_shared_context(agents, {"mc/arc_easy": "test"}, n=3, rows_dir=tmp_path)
    assert "reused" in capsys.readouterr().out and res2 == res and again.rows == first.rows
    R.table_shared_context(agents, {"mc/arc_easy": "test"}, n=2, rows_dir=tmp_path)     # other questions: rescored
    assert "reused" not in capsys.readouterr().out
    other = {"tiny alone": session.sharer}                                             # other model, same row name
    R.table_shared_context(other, {"mc/arc_easy": "test"}, n=2, rows_dir=tmp_path)
    assert "reused" not in capsys.readouterr().out


def test_t2_one_direction_keeps_the_other_table_and_plots_both(tmp_path, monkeypatch):
    from lcf_jax import reproduce as cli
    forward, reverse = cli.BUNDLED_PAIRS
    agents = {forward[0]: tiny_agent("tiny-llama", bos=False), forward[1]: tiny_agent("tiny-gemma3", bos=True, seed=1)}
    earlier = [{"set": "squad", "method": "receiver alone", "f1": 1.0, "latency_s": 0.5}]
    (tmp_path / f"t2_{forward[0]}_to_{forward[1]}.json").write_text(json.dumps(earlier))
    plotted = []
    monkeypatch.setattr(R, "plot_f1_latency", lambda results, out: plotted.extend(results))
    cli.main(["--table", "t2", "--n", "2", "--sets", "squad", "--budgets", "4", "--latency-repeats", "1",
              "--t2-directions", "reverse", "--out", str(tmp_path)], agents=agents)
    assert (tmp_path / f"t2_{reverse[0]}_to_{reverse[1]}.md").exists()
    assert not (tmp_path / f"t2_{forward[0]}_to_{forward[1]}.md").exists()  # the forward direction did not run
    sets = {r["set"] for r in plotted}
    assert f"squad ({forward[1]} recv.)" in sets and f"squad ({reverse[1]} recv.)" in sets
    assert "chosen on SQuAD dev" in (tmp_path / f"t2_{reverse[0]}_to_{reverse[1]}.md").read_text()
    # a prompt given on the command line is used as given (no dev selection) and the table says so; an --out
    # that does not exist yet is made before the first row is kept there
    monkeypatch.setattr(R, "select_context_prompt", lambda *a, **k: pytest.fail("selected again"))
    fresh = tmp_path / "not" / "yet"
    cli.main(["--table", "t2", "--n", "2", "--sets", "squad", "--budgets", "4", "--latency-repeats", "1",
              "--t2-directions", "reverse", "--t2-context-prompt", "context_1shot", "--out", str(fresh)],
             agents=agents)
    assert "`context_1shot` given on the command line" in (fresh / f"t2_{reverse[0]}_to_{reverse[1]}.md").read_text()


def test_saved_t2_results_are_tabled_without_running_anything(tmp_path):
    from lcf_jax import reproduce as cli
    rows = [{"set": "squad", "method": m, "protocol": p, "n": 4, "f1_per_question": f, "em_per_question": [0.0] * 4,
             "latency_s": 1.0, "bytes": 0, **({"budget": 64} if p == "text" else {})}
            for m, p, f in [("receiver alone", "alone", [0.0, 10.0, 0.0, 0.0]),
                            ("text (B=64, summary)", "text", [50.0, 0.0, 0.0, 10.0]),
                            ("LCF-X (m=4, window)", "lcfx", [100.0, 100.0, 0.0, 50.0]),
                            ("LCF-X (m=4, window) control (unrelated passage)", "lcfx_control", [0.0] * 4)]]
    saved = tmp_path / "t2_x.partial.json"
    saved.write_text(json.dumps(rows))
    cli.main(["--table", "t2", "--t2-results", str(saved), "--out", str(tmp_path)], agents={})
    md = (tmp_path / "t2_x.md").read_text()
    assert "| squad | LCF-X (m=4, window) | 62.5 [" in md
    lcfx_row = [line for line in md.splitlines() if line.startswith("| squad | LCF-X (m=4, window) |")][0]
    assert "62.5 [" in lcfx_row.split("|")[6]                       # ΔF1 vs its control: 62.5 - 0
    assert "47.5 [" in lcfx_row.split("|")[7]                       # ΔF1 vs text B=64: 62.5 - 15, paired
    # runs of one set each, tabled together; each set's Δ reads its own set's rows
    other = tmp_path / "t2_y.json"
    other.write_text(json.dumps([{**r, "set": "nq_openbook", "f1_per_question": [0.0] * 4} for r in rows]))
    cli.main(["--table", "t2", "--t2-results", f"{saved},{other}", "--t2-stem", "both", "--out", str(tmp_path)],
             agents={})
    md = (tmp_path / "both.md").read_text()
    assert "| squad | LCF-X (m=4, window) | 62.5 [" in md and "| nq_openbook | LCF-X (m=4, window) | 0.0 [" in md


def test_t1_control_rows_follow_each_adapter(session, tmp_path):
    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.adapters.lcf import LCFConfig
    from lcf_jax.eval import shared_mc
    from lcf_jax.train.objective import Setup

    s, r = session.sharer, session.receiver
    cfg = LCFConfig(rank=8)
    params = ADAPTER_KINDS["lcf"].init(jax.random.PRNGKey(0), cfg, s.config, r.config)
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype), params)
    adapter = dict(setup=Setup("lcf", cfg, s.config, r.config), params=params, frozen=(s.params, r.params),
                   features=shared_mc.mc_features(s.tokenizer, r.tokenizer), mb=0.1, source="tiny")
    t1, res = R.table_shared_context({"tiny alone": r}, {"mc/arc_easy": "test"}, n=4, adapters={"lcf": adapter},
                                     controls=["lcf"], rows_dir=tmp_path)
    names = [row[0] for row in t1.rows]
    assert names[:3] == ["tiny alone", "lcf", "lcf control (unrelated question)"]
    assert "Δ vs its control" in t1.columns and t1.rows[1][t1.columns.index("Δ vs its control")] is not None
    control = [x for x in res if x["control_of"] == "lcf"]
    assert len(control) == 1 and len(control[0]["choice_per_question"]) == 4
    assert len(list(tmp_path.glob("*.json"))) == 3     # alone, the adapter and its control kept apart
    with pytest.raises(ValueError, match="name no adapter row"):
        R.table_shared_context({"tiny alone": r}, {"mc/arc_easy": "test"}, n=2, adapters={"lcf": adapter},
                               controls=["lfc"])
    with pytest.raises(ValueError, match="two questions"):
        R.score_choices([{"question": "q", "choices": ["a", "b"], "gold": 0}], adapter=adapter, control=True)


def test_kept_rows_are_reused_only_for_the_same_scoring_version(tmp_path, monkeypatch):
    calls = []

    def score(examples):
        calls.append(len(examples))
        return [[-1.0, -2.0]] * len(examples), [[1, 1]] * len(examples)

    exs = [{"question": "q1"}, {"question": "q2"}]
    args = ("SmolLM2 alone", "smollm2", "mc/arc_easy", "test", exs, score, tmp_path)
    first = R.scored_rows(*args)
    assert R.scored_rows(*args) == first and calls == [2]       # the same key: reused
    path = next(tmp_path.glob("*.json"))
    kept = json.loads(path.read_text())
    del kept["key"]["scoring"]                                        # a row kept before the version field
    path.write_text(json.dumps(kept))
    R.scored_rows(*args)
    assert calls == [2]                                               # reads as version 1
    monkeypatch.setattr(R, "SCORING_VERSION", 2)
    R.scored_rows(*args)
    assert calls == [2, 2]                                            # new scoring code: scored again


def test_t1_text_rows_read_the_sharers_answer_and_its_control_the_answer_to_another_question(session, tmp_path, capsys):
    from lcf_jax.data import sources as S
    from lcf_jax.eval import text_mc

    s, r = session.sharer, session.receiver
    texts = {"text": (s, r)}
    t1, res = R.table_shared_context({"tiny alone": r}, {"mc/arc_easy": "test"}, n=4, texts=texts, rows_dir=tmp_path)
    names = [row[0] for row in t1.rows]
    assert names == ["tiny alone", "text", "text control (unrelated question)", "C2C", "LCF", "LCF pruned"]
    delta, vs_control = (t1.columns.index(c) for c in ("Δ vs receiver alone", "Δ vs its control"))
    assert t1.rows[1][delta] is not None and t1.rows[1][vs_control] is not None and t1.rows[2][vs_control] is None
    assert "sharer answers" in capsys.readouterr().out             # generated once for the row and its control
    kept = json.loads(next(tmp_path.glob("*.messages.json")).read_text())
    msgs = kept["messages"]
    assert len(msgs) == 4 and kept["key"]["scorer"] == text_mc.fingerprint(s.name, r.name)
    exs = S.read("mc/arc_easy", "test", max_examples=4)
    want = [R.mc_loglik(r, e["question"], e["choices"], text_mc.text_prompt(e["question"], msgs[(i + 2) % 4]))
            for i, e in enumerate(exs)]
    control = [x for x in res if x["control_of"] == "text"][0]
    got = R.score_choices(exs, agent=r, messages=lambda: msgs, control=True)[0]
    assert got == want and len(control["choice_per_question"]) == 4
    again, res2 = R.table_shared_context({"tiny alone": r}, {"mc/arc_easy": "test"}, n=4, texts=texts, rows_dir=tmp_path)
    out = capsys.readouterr().out
    assert "sharer answers" not in out and out.count("reused") == 3 and res2 == res
