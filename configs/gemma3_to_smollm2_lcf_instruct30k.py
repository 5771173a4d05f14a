"""`smollm2_to_gemma3_lcf_instruct30k.py` in the other direction: Gemma3 shares, SmolLM2 receives (the stronger model
sharing with the weaker). Same data, steps and dev multiple-choice watch (against SmolLM2 alone)."""
from pathlib import Path

from lcf_jax.train.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).with_name("smollm2_to_gemma3_lcf_instruct30k.py"))
    c.model.sharer, c.model.receiver = c.model.receiver, c.model.sharer
    c.name = "gemma3_to_smollm2_lcf_instruct30k"
    c.train.workdir = "runs/lcf_instruct30k_rev"
    return c
