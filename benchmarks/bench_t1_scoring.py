"""T1 scoring through a shared-context adapter, same run: questions per second when every choice row reads the
question itself (both models and the adapter's fusion over the whole row) against reading and fusing it once per
question and continuing each choice from that fused cache (`eval.shared_mc.context_read_once` and
`objective.receiver_hidden(same_context=True)`, what `mc_loglik_fused` does). C2C's fusion is most of its work.

    .venv/bin/python benchmarks/bench_t1_scoring.py [--direction reverse|forward] [--kind lcf|c2c] [--n 12]


The adapter has its kind's default configuration with random weights (speed does not depend on them); the
questions are the first n/4 dev rows of each T1 set. Each path scores every question once to compile its shapes,
then once timed. Also printed: the largest difference between the two paths' choice log-likelihoods and whether
they pick the same choice on every question.
"""
from __future__ import annotations

import argparse
import time

PAIR = ("smollm2-135m-instruct", "gemma3-270m")   # the bundled models, forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--direction", choices=["reverse", "forward"], default="reverse")
    ap.add_argument("--kind", choices=["lcf", "c2c"], default="lcf")
    ap.add_argument("--n", type=int, default=12, help="questions (spread over the four T1 sets)")
    args = ap.parse_args()

    import jax
    import numpy as np

    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.comm.agents import Agent
    from lcf_jax.data import sources
    from lcf_jax.eval import shared_mc
    from lcf_jax.eval.tables import T1_SETS
    from lcf_jax.train.objective import Setup

    names = PAIR if args.direction == "forward" else PAIR[::-1]
    sharer, receiver = (Agent.load(n) for n in names)
    spec = ADAPTER_KINDS[args.kind]
    acfg = spec.config()
    setup = Setup(args.kind, acfg, sharer.config, receiver.config)
    params = spec.init(jax.random.key(0), acfg, sharer.config, receiver.config)
    params = jax.tree.map(lambda x: x + 0.02 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    frozen = (sharer.params, receiver.params)
    features = shared_mc.mc_features(sharer.tokenizer, receiver.tokenizer)
    per_set = max(args.n // len(T1_SETS), 1)
    questions = [e for name in T1_SETS for e in sources.read(name, "dev", max_examples=per_set)]

    def baseline(e):
        batch, _ = shared_mc.choice_batch(features, e["question"], e["choices"])
        return [float(x) for x in np.asarray(shared_mc.choice_logliks(params, *frozen, batch, setup=setup, read_once=False))]

    def read_once(e):
        return shared_mc.mc_loglik_fused(setup, params, frozen, features, e["question"], e["choices"])[0]

    seconds, scores = {}, {}
    for name, fn in (("every row reads the question", baseline), ("question read once", read_once)):
        for e in questions:   # compile every shape
            fn(e)
        t = time.perf_counter()
        scores[name] = [fn(e) for e in questions]
        seconds[name] = time.perf_counter() - t
    a, b = scores.values()
    diff = max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))
    same = all(int(np.argmax(u)) == int(np.argmax(v)) for u, v in zip(a, b))
    print(f"{names[0]} -> {names[1]}, {args.kind}, {len(questions)} dev questions:")
    for name, s in seconds.items():
        print(f"  {name}: {len(questions) / s:.2f} questions/s")
    base, fast = seconds.values()
    print(f"  ratio: {base / fast:.2f}x; largest log-likelihood difference {diff:.2e}; same choice on every "
          f"question: {same}")


if __name__ == "__main__":
    main()
