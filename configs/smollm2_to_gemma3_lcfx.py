"""SmolLM2-135M-Instruct (sharer) -> Gemma-3-270M (receiver), LCF-X: the first recipe (attention pooling).

Two stages (`lcf_jax.train.config.lcfx_recipe`): closed-form latent alignment, then 150 QA steps that
train the unconditioned pooling, slot keys and value gates with the translation frozen. Chosen on SQuAD
dev (first 50) among the runs recorded by 2026-11-28: unconditioned F1 15.3, receiver-conditioned 8.3 (same
schedule), m=32 conditioned 4.6; the receiver alone scores 10.7 (docs/experiments.md). It carries no
information on test (docs/experiments.md); `smollm2_to_gemma3_lcfx_window.py` is the window recipe.
"""
from lcf_jax.train.config import lcfx_recipe


def get_config():
    return lcfx_recipe("smollm2-135m-instruct", "gemma3-270m")
