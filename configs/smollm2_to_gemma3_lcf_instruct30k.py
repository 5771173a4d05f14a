"""`smollm2_to_gemma3_lcf.py` trained on 30,000 distinct instruction examples, watched on dev multiple choice.

Data: the whole shared-context pool, instruct/t0 (templates built on an evaluated set left out when it is read:
`data.splits.EVALUATED_T0_SOURCES`) + instruct/gpteacher, 65,716 examples; 3,750 steps of 8 draw 30,000 of them,
each once (the first epoch of a seeded shuffle). Contexts are cut to 128 sharer tokens, as in the T1 recipe.
Every 250 steps: dev accuracy (rows with index % 2 == 0) on 200 questions of MMLU-Redux, ARC-Challenge, ARC-Easy
and OpenBookQA through the adapter, beside the receiver alone's, in metrics.jsonl; the best step by it is kept.
At the T1 recipe's pace on the 2-core CPU (~6 s a step) this is ~6.5 h: an accelerator run, or a faster step.
"""
from pathlib import Path

from lcf_jax.train.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).with_name("smollm2_to_gemma3_lcf.py"))
    c.name = "smollm2_to_gemma3_lcf_instruct30k"
    c.train.workdir = "runs/lcf_instruct30k"
    c.data.train_sets = ["instruct/t0", "instruct/gpteacher"]
    c.data.max_train_examples = -1
    c.data.max_sharer_len = 128
    c.data.mc_eval_examples = 200
    c.train.steps = 3750            # x data.batch_size 8 = 30,000 examples
    c.train.warmup_steps = 100
    c.train.eval_every = 250
    c.train.ckpt_every = 250
    c.train.keep_best = 1
    return c
