"""`gemma3_to_smollm2_lcf.py` (Gemma3 shares, SmolLM2 receives) with the data and evaluation of
`smollm2_to_gemma3_lcf_instruct30k.py`: 30,000 distinct instruction examples (3,750 steps of 8), dev multiple-choice
accuracy through the adapter beside SmolLM2 alone's every 250 steps, the best step kept."""
from pathlib import Path

from lcf_jax.train.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).with_name("gemma3_to_smollm2_lcf.py"))
    c.name = "gemma3_to_smollm2_lcf_instruct30k"
    c.train.workdir = "runs/lcf_instruct30k_rev"
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
