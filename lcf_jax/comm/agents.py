"""An agent is a frozen model with its tokenizer; prompts are built here, once, for every protocol."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.models import generate, registry, transformer
from lcf_jax.models.cache import ExtraKV, KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.generate import first_line  # noqa: F401  (answers' one rule; protocols read it here)


@dataclasses.dataclass
class Agent:
    name: str
    config: ModelConfig
    params: Any
    tokenizer: Any

    @classmethod
    def load(cls, name: str) -> "Agent":
        config, params = registry.load_model(name)
        return cls(name, config, jax.tree.map(jnp.asarray, params), registry.load_tokenizer(name))

    def encode(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 32) -> tuple[np.ndarray, np.ndarray]:
    return generate.pad_batch(rows, pad_id, multiple=multiple)


@functools.partial(jax.jit, static_argnames=("config",))
def prefill_cache(params, tokens, mask, *, config: ModelConfig) -> KVCache:
    """A context's cache (left-padded rows), for a sharer's message or an adapter."""
    _, cache = transformer.forward(params, tokens, transformer.positions_from_mask(mask), None, config=config,
                                   token_mask=mask, last_logits_only=True, causal_blocks=True)
    return cache


def generate_answers(agent: Agent, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                     extra_kv: Optional[ExtraKV] = None, multiple: int = 32,
                     cache: Optional[KVCache] = None) -> list[str]:
    """Greedy answers (first line) to left-padded prompts; `cache` holds a prefix the prompts continue
    (a positioned LCF-X message) with room for the prompt and the new tokens."""
    tokens, mask = pad_rows(prompts, agent.config.pad_token_id, multiple)
    held = 0 if cache is None else int(cache.index)
    generate.check_prompt_length(agent.config, held + tokens.shape[1], max_new_tokens)
    gen = generate.generate(agent.params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(0),
                            config=agent.config, max_new_tokens=max_new_tokens, extra_kv=extra_kv, cache=cache)
    out, lengths = np.asarray(gen.tokens), np.asarray(gen.lengths)
    return [first_line(agent.decode(out[i, :lengths[i]])) for i in range(len(prompts))]
