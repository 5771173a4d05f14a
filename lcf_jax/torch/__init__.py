"""PyTorch port of the lcf_jax adapters, for use beside Hugging Face transformers models. Needs no JAX.

    from lcf_jax.torch import load_adapter, answer_with_lcfx
    adapter = load_adapter("exported/lcfx", sharer_model=sharer, receiver_model=receiver)
    out = answer_with_lcfx(sharer, receiver, adapter, sharer_ids, prompt_ids, max_new_tokens=16)

Export adapters with `python -m lcf_jax.export` (see docs/pytorch_usage.md).
"""
from lcf_jax.torch.c2c import C2CAdapter
from lcf_jax.torch.cache_bridge import (SlidingWindowMismatchError, answer_with_lcfx, cache_from_kv, fuse_caches,
                                        generate_with_cache, kv_from_cache, lcfx_extra, positioned_prefix,
                                        positions_from_mask, prefill, prefix_cache)
from lcf_jax.torch.common import KV, ExtraKV
from lcf_jax.torch.lcf import LCFAdapter
from lcf_jax.torch.lcfx import LCFXAdapter
from lcf_jax.torch.load import (AdapterFormatError, ConfigHashMismatchError, FormatVersionError, TensorMismatchError,
                                build_adapter, check_model, load_adapter, model_config_of)

__all__ = ["AdapterFormatError", "C2CAdapter", "ConfigHashMismatchError", "ExtraKV", "FormatVersionError", "KV",
           "LCFAdapter", "LCFXAdapter", "SlidingWindowMismatchError", "TensorMismatchError", "answer_with_lcfx",
           "build_adapter", "cache_from_kv", "check_model", "fuse_caches", "generate_with_cache", "kv_from_cache",
           "lcfx_extra", "load_adapter", "model_config_of", "positioned_prefix", "positions_from_mask", "prefill",
           "prefix_cache"]
