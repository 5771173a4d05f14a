"""SmolLM2-135M-Instruct (sharer) -> Gemma-3-270M (receiver), c2c."""
from lcf_jax.train.config import pair_config


def get_config():
    return pair_config("smollm2-135m-instruct", "gemma3-270m", "c2c")
