"""Gemma-3-270M (sharer) -> SmolLM2-135M-Instruct (receiver), c2c."""
from lcf_jax.train.config import pair_config


def get_config():
    return pair_config("gemma3-270m", "smollm2-135m-instruct", "c2c")
