"""SmolLM2-135M-Instruct (sharer) -> Gemma-3-270M (receiver), LCF-X with a positioned message and a teacher.

The message sits in the receiver's cache right after its BOS (adapter.lcfx.injection="positioned"); each
slot is decoded into an input vector that the receiver prefills itself (decoder="embed"). The pooling is
receiver-conditioned (the paper's variant). Training distils from the receiver that reads the passage:
KL on the answer tokens and the distance of final hidden states over the prompt and answer, beside the
answer's cross-entropy. Extractive qa_train rows only (no SQuAD, NQ or HotpotQA text).
"""
from lcf_jax.train.config import pair_config


def get_config():
    c = pair_config("smollm2-135m-instruct", "gemma3-270m", "lcfx",
                    data={"answer_in_context": True, "teacher_context_len": 256, "batch_size": 16},
                    train={"steps": 600, "lr": 5e-4, "warmup_steps": 40, "eval_every": 200, "ckpt_every": 50,
                           "log_every": 5},
                    distill={"ce_weight": 1.0, "kl_weight": 1.0, "hidden_weight": 1.0})
    a = c.adapter.lcfx
    a.rank, a.slots, a.pool_heads, a.conditioned = 256, 32, 4, True
    a.injection, a.decoder, a.embed_hidden = "positioned", "embed", 1024
    c.name = "smollm2_to_gemma3_lcfx_distill"
    return c
