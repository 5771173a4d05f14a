"""Tiny random decoders of every family (hidden 32, 2-4 layers) and helpers to build caches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.models import transformer as T
from lcf_jax.models.config import ModelConfig

VOCAB = 64


def tiny(family: str) -> ModelConfig:
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, max_position_embeddings=256,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        return ModelConfig.from_hf_config(dict(model_type="llama", num_hidden_layers=3, num_attention_heads=4,
                                               num_key_value_heads=2, rope_theta=10000.0, **common), name="tiny-llama")
    if family == "qwen2":
        return ModelConfig.from_hf_config(dict(model_type="qwen2", num_hidden_layers=4, num_attention_heads=4,
                                               num_key_value_heads=1, rope_theta=1e6, use_sliding_window=False,
                                               **common), name="tiny-qwen2")
    if family == "qwen3":
        return ModelConfig.from_hf_config(dict(model_type="qwen3", num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, head_dim=16, rope_theta=1e6,
                                               use_sliding_window=False, **common), name="tiny-qwen3")
    if family == "gemma3":
        return ModelConfig.from_hf_config(dict(
            model_type="gemma3_text", num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
            head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
            layer_types=["sliding_attention", "full_attention"] * 2,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
            hidden_activation="gelu_pytorch_tanh", **common), name="tiny-gemma3")
    raise ValueError(family)


FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")


def model_params(cfg: ModelConfig, seed: int, scale: float = 0.2) -> dict:
    """Random weights drawn with numpy (no XLA compiles)."""
    rng = np.random.default_rng(seed)
    shapes = T.param_shapes(cfg)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s), jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))


def random_like(tree, seed: int, scale: float = 0.1):
    """numpy-random arrays shaped like a tree of arrays / ShapeDtypeStructs."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), jnp.float32), tree)


def left_padded_batch(lengths, width, seed, vocab=VOCAB):
    rng = np.random.default_rng(seed)
    mask = np.arange(width)[None, :] >= (width - np.asarray(lengths))[:, None]
    tokens = np.where(mask, rng.integers(3, vocab, size=(len(lengths), width)), 0)
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)


def prefill_cache(params, cfg, tokens, mask, extra_room: int = 0):
    """Cache of a left-padded context prefill, with room for `extra_room` more tokens."""
    from lcf_jax.models.cache import KVCache
    b, t = tokens.shape
    cache = KVCache.empty(cfg, b, t + extra_room)
    _, cache = T.forward_jit(params, tokens, T.positions_from_mask(mask), cache, config=cfg, token_mask=mask)
    return cache


def question_logits(params, cfg, cache, question, question_pos, extra_kv=None):
    logits, _ = T.forward_jit(params, question, question_pos, cache, config=cfg, extra_kv=extra_kv)
    return logits


def random_alignment(sharer_mask, receiver_mask, seed):
    """Monotone random alignment (each real receiver slot -> a real sharer slot), -1 for padding."""
    from lcf_jax.adapters.align import alignment_to_slots
    rng = np.random.default_rng(seed)
    als = []
    for b in range(receiver_mask.shape[0]):
        ns, nr = int(np.sum(sharer_mask[b])), int(np.sum(receiver_mask[b]))
        als.append(np.sort(rng.integers(0, ns, size=nr)))
    return jnp.asarray(alignment_to_slots(als, np.asarray(sharer_mask), np.asarray(receiver_mask)))


def random_cache(cfg, lengths, width, seed, dtype=jnp.float32):
    """A KVCache of random K/V with left-padded real tokens (positions from the mask)."""
    from lcf_jax.models.cache import KVCache
    rng = np.random.default_rng(seed)
    mask = np.arange(width)[None, :] >= (width - np.asarray(lengths))[:, None]
    shape = (cfg.num_layers, len(lengths), cfg.num_kv_heads, width, cfg.head_dim)
    pos = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
    return KVCache(keys=jnp.asarray(rng.standard_normal(shape), dtype),
                   values=jnp.asarray(rng.standard_normal(shape), dtype),
                   positions=jnp.asarray(pos, jnp.int32), mask=jnp.asarray(mask), index=jnp.asarray(width, jnp.int32))
