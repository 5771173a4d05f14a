"""SmolLM2-135M-Instruct (sharer) -> Gemma-3-270M (receiver), LCF-X: the recipe of the shipped adapter.

Stage 1: the linear latent path's translation solved in closed form on 40 batches of training
passages (train/latent_align.py). Stage 2: the QA loss on extractive qa_train rows trains the pooling
(receiver-conditioned queries), the slot keys and the value gates; the value translation stays fixed.
"""
from lcf_jax.train.config import pair_config

FROZEN_TRANSLATION = ["enc_w", "enc_b", "pool_wv", "pool_wo", "dec_wv", "dec_bv"]


def get_config():
    c = pair_config("smollm2-135m-instruct", "gemma3-270m", "lcfx",
                    data={"answer_in_context": True},
                    train={"steps": 300, "warmup_steps": 20, "eval_every": 150, "ckpt_every": 50,
                           "freeze": FROZEN_TRANSLATION},
                    pretrain={"method": "closed_form", "steps": 40, "max_len": 128})
    c.adapter.lcfx.conditioned, c.adapter.lcfx.linear, c.adapter.lcfx.pool_heads = True, True, 1
    return c
