"""Tiny agents for protocol tests: random tiny models with small in-memory byte-level tokenizers."""
import dataclasses

import jax
import jax.numpy as jnp
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lcf_jax.comm.agents import Agent
from lcf_jax.models import registry, transformer

CORPUS = ["The quick brown fox jumps over the lazy dog in Paris in 1889.",
          "Question: who wrote it? Answer: the author. Context: a passage about rivers and mountains."] * 20


def tiny_tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<bos>", "<eos>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        from tokenizers.processors import TemplateProcessing
        tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def tiny_agent(name: str, bos: bool, seed: int = 0) -> Agent:
    tok = tiny_tokenizer(bos)
    config = dataclasses.replace(registry.TINY_CONFIGS[name], vocab_size=len(tok), eos_token_ids=(2,), pad_token_id=0)
    params = transformer.init_params(config, jax.random.PRNGKey(seed), scale=0.1)
    return Agent(name, config, jax.tree.map(jnp.asarray, params), tok)
