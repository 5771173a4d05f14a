"""Gemma-3-270M (sharer) -> SmolLM2-135M-Instruct (receiver), LCF-X: the shipped recipe, reversed
(`lcf_jax.train.config.lcfx_recipe`)."""
from lcf_jax.train.config import lcfx_recipe


def get_config():
    return lcfx_recipe("gemma3-270m", "smollm2-135m-instruct")
