"""The main job on the bundled models: each model answers a prompt (`python -m lcf_jax.demo`)."""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from lcf_jax.models import generate, registry

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    args = ap.parse_args(argv)
    for name, bundled in registry.BUNDLED.items():
        t = time.perf_counter()
        config, params = registry.load_model(name)
        tok = registry.load_tokenizer(name)
        params = jax.tree.map(jnp.asarray, params)
        load_s = time.perf_counter() - t
        prompt = args.prompt if bundled.chat else f"Question: {args.prompt}\nAnswer:"
        t = time.perf_counter()
        [answer] = generate.generate_text(params, config, tok, [prompt], max_new_tokens=args.max_new_tokens,
                                          chat=bundled.chat)
        print(f"[{name}] (load {load_s:.1f} s, generate {time.perf_counter() - t:.1f} s incl. compile)\n"
              f"  prompt: {prompt!r}\n  answer: {answer.strip()!r}")


if __name__ == "__main__":
    main()
