"""Gemma-3-270M (sharer) -> SmolLM2-135M-Instruct (receiver), lcf."""
from lcf_jax.train.config import pair_config


def get_config():
    return pair_config("gemma3-270m", "smollm2-135m-instruct", "lcf")
