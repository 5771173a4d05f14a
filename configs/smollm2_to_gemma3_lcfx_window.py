"""SmolLM2-135M-Instruct (sharer) -> Gemma-3-270M (receiver), LCF-X as a question-chosen excerpt.

Two stages, neither of which runs the receiver over the passage:
  1. token translation (pretrain.method="tokens"): every sharer token of the training passages is
     translated, through the joint K/V bottleneck of the sharer's first 8 layers (rank 256), into the
     input vector the receiver gives the same text (decoder="embed");
  2. the locator (pretrain.locator_steps): the receiver's summary of its own prompt (its first 9 layers)
     scores each sharer token; training puts the score mass on the answer's tokens.
The message is the m = 64 consecutive translated tokens with the most score mass (pooling="window"),
prefilled by the receiver right after its BOS (injection="positioned"). No QA fine-tuning (train.steps=0):
the run's checkpoint at step 0 is the adapter. Training reads qa_train/ only (extractive rows for the
locator); no SQuAD, NQ or HotpotQA text.
"""
from lcf_jax.train.config import pair_config


def get_config():
    c = pair_config("smollm2-135m-instruct", "gemma3-270m", "lcfx",
                    data={"answer_in_context": False, "batch_size": 16},
                    train={"steps": 0, "log_every": 10, "ckpt_every": 50},
                    pretrain={"method": "tokens", "steps": 500, "lr": 1e-3, "batch_size": 16, "max_len": 256,
                              "locator_steps": 300, "locator_lr": 1e-3, "locator_batch_size": 32})
    a = c.adapter.lcfx
    a.rank, a.slots, a.conditioned, a.pooling, a.locator_rank = 256, 64, True, "window", 128
    a.injection, a.decoder, a.embed_hidden = "positioned", "embed", 1024
    a.sharer_layers = list(range(8))
    a.cond_layers = list(range(9))
    c.name = "smollm2_to_gemma3_lcfx_window"
    c.train.workdir = "runs/lcfx_window"
    return c
