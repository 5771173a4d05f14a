"""The paper's pair, Qwen2.5-0.5B-Instruct -> Qwen3-0.6B, LCF: sized for TPU pods (see launch/).

The weights are not bundled here: on a pod, point model.sharer/receiver at converted checkpoints.
"""
from lcf_jax.train.config import pair_config


def get_config():
    return pair_config("qwen2.5-0.5b-instruct", "qwen3-0.6b", "lcf",
                       data={"batch_size": 256, "max_sharer_len": 1024},
                       train={"steps": 20000, "lr": 3e-4, "warmup_steps": 500, "compute_dtype": "bfloat16",
                              "eval_every": 1000, "ckpt_every": 500, "workdir": "gs://YOUR_BUCKET/lcf/qwen25_to_qwen3_lcf"},
                       mesh={"data": -1, "model": 1})
