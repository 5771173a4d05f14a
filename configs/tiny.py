"""Tiny random models and synthetic data: tests and smoke runs (seconds on a CPU)."""
from lcf_jax.train.config import pair_config


def get_config():
    return pair_config("tiny-llama", "tiny-gemma3", "lcfx",
                       adapter={}, data={"task": "synthetic", "batch_size": 8},
                       train={"steps": 10, "lr": 1e-2, "warmup_steps": 2, "log_every": 1, "eval_every": 1000,
                              "ckpt_every": 5, "workdir": "runs/tiny"})
