"""Bad input through every command line's `main(argv)`, in-process: each gets exit code 2, ONE stderr line
`error: ...` naming the problem, no traceback, and no output written. Every case fails before a model or
tokenizer loads (input is checked first), so the whole file runs in seconds.

A case is (name, command line, argv, words the error must contain). argv may name the fixture's files as
{placeholders}; {out} is the case's own output path, which must not exist afterwards.
"""
import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch import tpu
from lcf_jax import answer, demo, export, reproduce
from lcf_jax.cli_errors import UserError, run_main
from lcf_jax.paths import repo_root
from lcf_jax.train import __main__ as train_cli, context_store, sharer_targets

ROOT = repo_root()
TINY = str(ROOT / "configs" / "tiny.py")
ROW = {"id": "a", "sharer_context": "The Eiffel Tower was completed in 1889.", "question": "When?", "answers": ["1889"]}

# Input files (JSONL text) for `answer`, one mistake each.
ROW_FILES = {
    "good": json.dumps(ROW),
    "bad_json": '{"id": "a", "sharer_context": "x", "question": ',
    "list_row": json.dumps([ROW]),
    "no_passage": json.dumps({"id": "a", "question": "q"}),
    "int_passage": json.dumps({"id": "a", "sharer_context": 5, "question": "q"}),
    "list_question": json.dumps({"id": "a", "sharer_context": "x", "question": ["x"]}),
    "empty_passage": json.dumps({"id": "a", "sharer_context": "", "question": "q"}),
    "blank_question": json.dumps({"id": "a", "sharer_context": "x", "question": "  \n "}),
    "answers_str": json.dumps({**ROW, "answers": "1889"}),
    "answers_ints": json.dumps({**ROW, "answers": [1889]}),
    "bool_id": json.dumps({**ROW, "id": True}),
    "dup_ids": json.dumps(ROW) + "\n" + json.dumps(ROW),
    "empty": "\n\n",
}


def _c(name, main, argv, *says):
    return pytest.param(main, argv, says, id=name)


ANSWER = ["--protocol", "oracle", "--output", "{out}", "--input"]
LCFX = ["--protocol", "lcfx", "--output", "{out}", "--input", "{good}"]
CASES = [
    # answer: the rows
    _c("answer-missing-input", answer.main, ANSWER + ["{dir}/nope.jsonl"], "nope.jsonl does not exist"),
    _c("answer-input-is-dir", answer.main, ANSWER + ["{dir}"], "is not a file"),
    _c("answer-bad-json", answer.main, ANSWER + ["{bad_json}"], "bad_json.jsonl:1 is not valid JSON"),
    _c("answer-row-not-object", answer.main, ANSWER + ["{list_row}"], "is a JSON list, not an object"),
    _c("answer-row-lacks-passage", answer.main, ANSWER + ["{no_passage}"], "lacks ['sharer_context']"),
    _c("answer-passage-not-string", answer.main, ANSWER + ["{int_passage}"], "(id 'a'): sharer_context must be a string"),
    _c("answer-question-not-string", answer.main, ANSWER + ["{list_question}"], "question must be a string"),
    _c("answer-empty-passage", answer.main, ANSWER + ["{empty_passage}"], "(id 'a'): sharer_context is empty"),
    _c("answer-blank-question", answer.main, ANSWER + ["{blank_question}"], "question is empty"),
    _c("answer-answers-string", answer.main, ANSWER + ["{answers_str}"], "answers must be a list of strings"),
    _c("answer-answers-ints", answer.main, ANSWER + ["{answers_ints}"], "answers must be a list of strings"),
    _c("answer-bool-id", answer.main, ANSWER + ["{bool_id}"], "id must be a non-empty string or an integer"),
    _c("answer-repeated-id", answer.main, ANSWER + ["{dup_ids}"], "dup_ids.jsonl:2 (id 'a') repeats the id of line 1"),
    _c("answer-no-rows", answer.main, ANSWER + ["{empty}"], "holds no rows"),
    _c("answer-not-utf8", answer.main, ANSWER + ["{latin1}"], "is not UTF-8 text"),
    # answer: the flags
    _c("answer-unknown-protocol", answer.main, ["--protocol", "telepathy", "--input", "{good}", "--output", "{out}"],
       "invalid choice: 'telepathy'"),
    _c("answer-budget-not-int", answer.main, ANSWER + ["{good}", "--budget", "many"], "invalid int value: 'many'"),
    _c("answer-zero-budget", answer.main, ANSWER + ["{good}", "--budget", "0"], "--budget must be at least 1"),
    _c("answer-negative-new-tokens", answer.main, ANSWER + ["{good}", "--max-new-tokens", "-1"],
       "--max-new-tokens must be at least 1"),
    _c("answer-zero-context", answer.main, ANSWER + ["{good}", "--max-context-tokens", "0"],
       "--max-context-tokens must be at least 1"),
    _c("answer-context-beyond-model", answer.main, ANSWER + ["{good}", "--max-context-tokens", "100000"],
       "more than gemma3-270m can read with protocol oracle: at most 32496"),
    _c("answer-unknown-model", answer.main, ANSWER + ["{good}", "--sharer", "gpt-17"], "--sharer 'gpt-17' is not a bundled model"),
    _c("answer-no-output", answer.main, ["--protocol", "alone", "--input", "{good}"], "--output is required"),
    _c("answer-output-is-input", answer.main, ["--protocol", "alone", "--input", "{good}", "--output", "{good}"],
       "is the input file: it would be overwritten"),
    _c("answer-output-is-dir", answer.main, ["--protocol", "alone", "--input", "{good}", "--output", "{dir}"],
       "--output", "is a directory"),
    _c("answer-split-needs-lcfx", answer.main, ["--protocol", "text", "--input", "{good}", "--save-message", "{out}"],
       "--save-message splits LCF-X into two processes: it needs --protocol lcfx"),
    _c("answer-both-halves", answer.main, ["--protocol", "lcfx", "--input", "{good}", "--save-message", "{out}",
                                           "--message", "{garbage_msg}"], "give one of them"),
    _c("answer-sharer-half-with-output", answer.main, ["--protocol", "lcfx", "--input", "{good}", "--save-message",
                                                       "{out}", "--output", "{dir}/p.jsonl"], "drop --output"),
    _c("answer-dtype-without-lcfx", answer.main, ANSWER + ["{good}", "--message-dtype", "int8"],
       "--message-dtype sets the dtype of the LCF-X message"),
    # answer: adapters and messages
    _c("answer-missing-adapter", answer.main, LCFX + ["--adapter", "{dir}/no_adapter"], "no_adapter does not exist"),
    _c("answer-adapter-of-another-pair", answer.main, LCFX + ["--adapter", "{tiny_adapter}"],
       "the adapter translates tiny-llama -> tiny-gemma3, not smollm2-135m-instruct -> gemma3-270m"),
    _c("answer-not-an-adapter", answer.main, LCFX + ["--adapter", "{dir}"], "holds no exported adapter (adapter.json)"),
    _c("answer-message-missing", answer.main, LCFX + ["--message", "{dir}/nope.lcfx"], "message file", "does not exist"),
    _c("answer-message-garbage", answer.main, LCFX + ["--message", "{garbage_msg}"], "is not an LCF-X message"),
    _c("answer-message-other-weights", answer.main, LCFX + ["--message", "{other_weights_msg}"],
       "made by an adapter with other weights"),
    _c("answer-message-other-pair", answer.main, LCFX + ["--message", "{other_pair_msg}"],
       "made for gemma3-270m -> smollm2-135m-instruct"),
    _c("answer-message-nan", answer.main, LCFX + ["--message", "{nan_msg}"], "non-finite values (NaN/inf) in rows ['a']"),
    _c("answer-message-truncated", answer.main, LCFX + ["--message", "{truncated_msg}"], "is truncated"),
    _c("answer-message-other-rows", answer.main, LCFX + ["--message", "{other_rows_msg}"],
       "carries rows ['z'] but --input has ['a']"),
    # train
    _c("train-missing-config", train_cli.main, ["--config=configs/nope.py"], "config file configs/nope.py does not exist"),
    _c("train-no-config", train_cli.main, ["--config.train.steps=3"], "missing --config=configs/X.py"),
    _c("train-unknown-key", train_cli.main, [f"--config={TINY}", "--config.train.nope=1"], "unknown config key 'train.nope'"),
    _c("train-wrong-type", train_cli.main, [f"--config={TINY}", "--config.train.steps=many"],
       "config key 'train.steps' takes int values like", "got 'many'"),
    _c("train-bool-spelling", train_cli.main, [f"--config={TINY}", "--config.train.async_checkpoint=false"],
       "config key 'train.async_checkpoint' takes bool values", "got 'false'", "True or False"),
    _c("train-bad-value", train_cli.main, [f"--config={TINY}", "--config.adapter.lcfx.rank=0"],
       "rank and slots must be positive"),
    _c("train-unknown-model", train_cli.main, [f"--config={TINY}", "--config.model.sharer=gpt-17"],
       "model.sharer='gpt-17' is unknown"),
    _c("train-stored-needs-shared-context", train_cli.main, [f"--config={TINY}", "--config.train.sharer_cache=stored"],
       "sharer_cache='stored' stores shared contexts", "adapter.kind='lcfx'"),
    _c("context-store-needs-shared-context", context_store.main, [f"--config={TINY}",
                                                                  "--config.train.sharer_cache=stored"],
       "sharer_cache='stored' stores shared contexts"),
    _c("train-unknown-flag", train_cli.main, [f"--config={TINY}", "--steps=3"], "unknown argument '--steps=3'"),
    _c("train-freeze-unknown", train_cli.main, [f"--config={TINY}", "--config.train.freeze=['nope']"],
       "train.freeze names ['nope']"),
    _c("train-config-syntax-error", train_cli.main, ["--config={broken_config}"], "config:"),
    _c("train-mc-eval-without-text", train_cli.main, [f"--config={TINY}", "--config.adapter.kind='lcf'",
                                                      "--config.data.mc_eval_examples=4"], "needs data.task='instruct'"),
    _c("train-mc-eval-on-lcfx", train_cli.main, [f"--config={TINY}", "--config.data.mc_eval_examples=4"],
       "evaluates a shared-context adapter"),
    _c("train-missing-init-adapter", train_cli.main, [f"--config={TINY}", "--config.train.init_adapter='{dir}/nope'"],
       "holds no exported adapter"),
    _c("train-missing-targets-file", train_cli.main, [f"--config={TINY}", "--config.data.targets_file='{dir}/nope.jsonl'"],
       "data.targets_file=", "does not exist", "lcf_jax.train.sharer_targets"),
    _c("sharer-targets-bad-batch", sharer_targets.main, [f"--config={TINY}", "--out", "{out}", "--batch-size", "0"],
       "--batch-size"),
    _c("train-every-checkpoint-corrupt", train_cli.main, [f"--config={TINY}", "--config.train.workdir={dead_run}"],
       "None of the 2 checkpoints", "step 6: its 'params' item is missing", "no step is usable"),
    # export
    _c("export-missing-checkpoint", export.main, ["--checkpoint", "{dir}/no_run", "--out", "{out}"], "no_run does not exist"),
    _c("export-corrupt-step", export.main, ["--checkpoint", "{corrupt_run}", "--out", "{out}"],
       "checkpoint step 6", "its 'config' item is missing", "usable steps: [3]", "--step 3"),
    _c("export-every-step-corrupt", export.main, ["--checkpoint", "{dead_run}", "--out", "{out}", "--step", "3"],
       "checkpoint step 3", "its 'params' item is missing", "no step of this run is usable"),
    _c("export-missing-step", export.main, ["--checkpoint", "{run}", "--out", "{out}", "--step", "99"],
       "no checkpoint for step 99; steps: [3, 6]"),
    _c("export-negative-step", export.main, ["--checkpoint", "{run}", "--out", "{out}", "--step", "-1"],
       "--step must be at least 0"),
    _c("export-bad-energy", export.main, ["--checkpoint", "{run}", "--out", "{out}", "--prune-energy", "1.5"], "in (0, 1]"),
    _c("export-over-checkpoint", export.main, ["--checkpoint", "{run}/checkpoints", "--out", "{run}"], "would replace it"),
    _c("export-prune-lcfx", export.main, ["--checkpoint", "{run}", "--out", "{out}", "--prune-rank", "2"],
       "pruning applies to LCF adapters"),
    _c("export-bad-dtype", export.main, ["--checkpoint", "{run}", "--out", "{out}", "--dtype", "int4"], "invalid choice: 'int4'"),
    # reproduce
    _c("reproduce-negative-n", reproduce.main, ["--table", "t2", "--n", "-5", "--out", "{out}"], "--n", "at least 2", "-5"),
    _c("reproduce-unknown-set", reproduce.main, ["--table", "t2", "--sets", "squad,trivia", "--out", "{out}"],
       "--sets: unknown ['trivia']"),
    _c("reproduce-bad-budgets", reproduce.main, ["--table", "t2", "--budgets", "32,lots", "--out", "{out}"],
       "comma-separated integers"),
    _c("reproduce-zero-budget", reproduce.main, ["--table", "t2", "--budgets", "0,64", "--out", "{out}"], "at least 1 token"),
    _c("reproduce-zero-repeats", reproduce.main, ["--table", "t2", "--latency-repeats", "0", "--out", "{out}"],
       "--latency-repeats must be at least 1"),
    _c("reproduce-entry-without-name", reproduce.main, ["--table", "t1", "--t1-adapters", "adapters/x", "--out", "{out}"],
       "--t1-adapters 'adapters/x' needs the form NAME=DIR"),
    _c("reproduce-controls-without-adapters", reproduce.main, ["--table", "t1", "--t1-controls", "all", "--out", "{out}"],
       "--t1-controls", "--t1-adapters"),
    _c("reproduce-control-of-no-row", reproduce.main, ["--table", "t1", "--t1-adapters", "m={dir}", "--t1-controls", "n",
                                                       "--out", "{out}"], "--t1-controls", "unknown ['n']"),
    _c("reproduce-text-pair-unknown", reproduce.main, ["--table", "t1", "--t1-text", "gemma3-270m:qwen3", "--out", "{out}"],
       "--t1-text 'gemma3-270m:qwen3'", "SHARER:RECEIVER", "gemma3-270m:smollm2-135m-instruct"),
    _c("reproduce-text-without-t1", reproduce.main, ["--table", "t2", "--t1-text", "gemma3-270m:smollm2-135m-instruct",
                                                     "--out", "{out}"], "--t1-text adds T1 rows"),
    _c("reproduce-entry-missing-dir", reproduce.main, ["--table", "t2", "--t2-adapters", "m=/no/such/dir", "--out", "{out}"],
       "/no/such/dir is not a directory"),
    _c("reproduce-unknown-rung", reproduce.main, ["--table", "ladder", "--ladder-rungs", "R0,R9", "--out", "{out}"],
       "--ladder-rungs: unknown ['R9']"),
    _c("reproduce-ablations-without-runs", reproduce.main, ["--table", "ablations", "--out", "{out}"],
       "--table ablations needs --ablation-runs"),
    _c("reproduce-hint-without-adapters", reproduce.main, ["--table", "hint", "--out", "{out}"],
       "--table hint needs --hint-adapters"),
    _c("reproduce-hint-entry-missing-dir", reproduce.main, ["--table", "hint", "--hint-adapters", "m=/no/such/dir",
                                                            "--out", "{out}"], "--hint-adapters", "is not a directory"),
    # demo
    _c("demo-zero-n", demo.main, ["--n", "0"], "--n must be at least 1"),
    _c("demo-missing-adapter", demo.main, ["--adapter", "{dir}/no_adapter"], "no_adapter does not exist"),
    # launch.tpu
    _c("launch-unknown-tpu", tpu.main, [f"--config={TINY}", "--tpu=v9-32", "--name=x", "--zone=z", "--project=p",
                                        "--dry-run"], "unknown TPU type 'v9-32'"),
    _c("launch-zero-gpus", tpu.main, ["--print-slurm", "--gpus-per-node=0", f"--config={TINY}"],
       "--gpus-per-node must be at least 1"),
    _c("launch-zero-processes", tpu.main, ["--local-processes=0", f"--config={TINY}"], "must be >= 1"),
    _c("launch-unknown-flag", tpu.main, [f"--config={TINY}", "--tpus=8"], "unknown arguments ['--tpus=8']"),
    _c("launch-port-not-int", tpu.main, ["--print-ssh", "--hosts=a", "--port=http"], "invalid int value: 'http'"),
]


# ------------------------------------------------------------------------------------------------
# Fixtures: tiny files, a tiny run (steps 3 and 6), damaged copies of it, message files
# ------------------------------------------------------------------------------------------------
def _tiny_run(workdir: Path) -> None:
    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.models.registry import TINY_CONFIGS
    from lcf_jax.train import config as config_lib
    from lcf_jax.train.ckpt import Checkpointer
    cfg = config_lib.parse_argv([f"--config={TINY}"])
    params = ADAPTER_KINDS["lcfx"].init(jax.random.PRNGKey(0), config_lib.adapter_config(cfg),
                                        TINY_CONFIGS["tiny-llama"], TINY_CONFIGS["tiny-gemma3"])
    with Checkpointer(workdir / "checkpoints", keep_last=None, async_save=False) as ck:
        for step in (3, 6):
            ck.save(step, params, {"mu": jnp.zeros(2)}, data_state={"epoch": 0}, config=cfg.to_dict())


def _messages(d: Path) -> dict[str, Path]:
    """Message files that the shipped adapter's receiver must refuse, one reason each."""
    from lcf_jax.comm.shipped import load_lcfx_adapter
    from lcf_jax.comm import wire
    cfg, params, meta = load_lcfx_adapter()
    ident = wire.AdapterIdentity.of(cfg, params, meta["sharer"]["name"], meta["receiver"]["name"])
    lat = np.zeros((1, ident.slots, ident.rank), np.float32)
    msgs = {"other_weights_msg": wire.Message(dataclasses.replace(ident, params_sha256="0" * 64), ("a",), lat),
            "other_pair_msg": wire.Message(dataclasses.replace(ident, sharer=ident.receiver, receiver=ident.sharer),
                                           ("a",), lat),
            "other_rows_msg": wire.Message(ident, ("z",), lat)}
    out = {name: wire.save(d / f"{name}.lcfx", m) for name, m in msgs.items()}
    nan = wire.to_bytes(wire.Message(ident, ("a",), lat)).replace(np.float32(0).tobytes() * 4, np.float32(np.nan).tobytes() * 4, 1)
    out["nan_msg"] = d / "nan.lcfx"
    out["nan_msg"].write_bytes(nan)
    out["truncated_msg"] = d / "truncated.lcfx"
    out["truncated_msg"].write_bytes(wire.to_bytes(wire.Message(ident, ("a",), lat))[:-100])
    out["garbage_msg"] = d / "garbage.lcfx"
    out["garbage_msg"].write_bytes(b"not a message")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad_input")
    paths = {"dir": d}
    for name, text in ROW_FILES.items():
        paths[name] = d / f"{name}.jsonl"
        paths[name].write_text(text + "\n")
    paths["latin1"] = d / "latin1.jsonl"
    paths["latin1"].write_bytes(json.dumps(ROW).replace("Eiffel", "Eiffél").encode("latin-1"))
    paths["broken_config"] = d / "broken.py"
    paths["broken_config"].write_text("def get_config(:\n")
    _tiny_run(d / "run")
    shutil.copytree(d / "run", d / "corrupt_run")
    shutil.rmtree(d / "corrupt_run" / "checkpoints" / "6" / "config")  # a step whose save was cut short
    shutil.copytree(d / "run", d / "dead_run")
    for step in ("3", "6"):
        shutil.rmtree(d / "dead_run" / "checkpoints" / step / "params")
    paths.update(run=d / "run", corrupt_run=d / "corrupt_run", dead_run=d / "dead_run")
    from lcf_jax.train.export_run import export_checkpoint
    paths["tiny_adapter"] = export_checkpoint(d / "run", d / "tiny_adapter")
    paths.update(_messages(d))
    return {k: str(v) for k, v in paths.items()}


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
def test_there_are_at_least_30_distinct_bad_inputs():
    assert len({c.id for c in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("main,argv,says", CASES)
def test_bad_input_gets_one_clear_line(main, argv, says, files, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(out=out, **files) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for words in says:
        assert words in lines[0], (words, lines[0])
    assert not out.exists(), "nothing is written when the input is refused"


def test_debug_shows_the_traceback(files, monkeypatch):
    """--debug (or LCF_JAX_DEBUG=1) re-raises the error itself, so the traceback shows where it came from."""
    argv = ANSWER + [files["empty_passage"]]
    with pytest.raises(answer.RowError, match="sharer_context is empty"):
        answer.main([a.format(out=files["dir"] + "/o") for a in argv] + ["--debug"])
    monkeypatch.setenv("LCF_JAX_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        export.main(["--checkpoint", files["dir"] + "/no_run", "--out", files["dir"] + "/o"])


def test_unexpected_errors_keep_their_traceback():
    """A bug is not a user error: it propagates (with its traceback) instead of becoming a tidy line."""
    def buggy(argv):
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        run_main(buggy, [])
    assert run_main(lambda argv: argv, ["--x", "--debug"]) == ["--x"]  # --debug never reaches the command


def test_user_error_in_a_subprocess_prints_one_line():
    """The real `python -m` entry point: exit status 2 and one line (no in-process capture involved)."""
    import os
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "lcf_jax.answer", "--protocol", "alone", "--input", "/no/rows.jsonl",
                           "--output", "/tmp/never.jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: input file /no/rows.jsonl does not exist"]


class _WordAgent:
    """An agent whose tokens are words: enough to count what a passage loses when it is cut."""
    def encode(self, text, special=True):
        return text.split()


def test_cut_passages_are_counted_and_reported():
    from lcf_jax.comm.protocols import QATask
    tasks = [QATask("short", "a b c", "q"), QATask("long", " ".join(["w"] * 20_000), "q"), QATask("edge", "a b c d", "q")]
    long, room = answer.cut_passages(_WordAgent(), tasks, limit=4)
    assert long == [("long", 20_000)] and room == 4
    line = answer.cut_report(long, len(tasks), room, "smollm2-135m-instruct", limit=8192)
    assert line.startswith("warning: 1 of 3 passages are longer than 4 smollm2-135m-instruct tokens and were cut to 4")
    assert "longest 20000 tokens" in line and "--max-context-tokens (at most 8192)" in line and "\n" not in line
    long, room = answer.cut_passages(_WordAgent(), tasks, limit=4, special_prefix=1)  # a BOS takes one place
    assert [i for i, _ in long] == ["long", "edge"] and room == 3


def test_read_rows_returns_good_rows_and_refuses_bad_ones(files):
    rows = answer.read_rows(Path(files["good"]))
    assert rows == [ROW]
    with pytest.raises(UserError, match="lacks"):
        answer.read_rows(Path(files["no_passage"]))
