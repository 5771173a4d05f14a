"""Tiny random Hugging Face models of each supported family, built locally (no downloads)."""
import torch
from transformers import (AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config)

FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")
_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
               pad_token_id=0)


def tiny_hf_model(family: str, seed: int = 0):
    if family == "llama":
        cfg = LlamaConfig(**_COMMON, tie_word_embeddings=False)
    elif family == "qwen2":
        cfg = Qwen2Config(**_COMMON, tie_word_embeddings=True)
    elif family == "qwen3":
        cfg = Qwen3Config(**_COMMON)
    elif family == "gemma3":
        # Window 6 so sequences of ~20 tokens exercise the sliding mask; two RoPE bases.
        cfg = Gemma3TextConfig(**_COMMON, sliding_window=6, query_pre_attn_scalar=24,
                               layer_types=["sliding_attention", "full_attention"] * 2)
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # default init leaves biases/norms trivial: perturb so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model
