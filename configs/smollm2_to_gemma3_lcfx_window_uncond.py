"""The window recipe (`smollm2_to_gemma3_lcfx_window.py`) with an unconditioned window: the locator scores
each sharer token from the passage alone (a learned prior z . w_b), without the receiver's question.

The paper's LCF-X pools "what the receiver does not have" (conditioned); this is the variant it is compared
against. To compare the two on exactly the same translation, reuse a trained run's stage 1:
    --config.pretrain.translation_from=runs/exports/lcfx_window_s2   (an exported window adapter)
which skips the token translation and trains only the locator's prior (the receiver is never run).
"""
from pathlib import Path

from lcf_jax.train.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).with_name("smollm2_to_gemma3_lcfx_window.py"))
    c.adapter.lcfx.conditioned = False
    c.adapter.lcfx.cond_layers = None
    c.name = "smollm2_to_gemma3_lcfx_window_uncond"
    c.train.workdir = "runs/lcfx_window_uncond"
    return c
