"""Checks that snapping decoded LCF-X vectors to the vocabulary gives the same ids whatever the row chunk: the shipped
adapter's messages for the first 300 SQuAD test questions, at batch 1 (chunk 64) and batch 8 (chunk 512), and times a
batch-1 snap both ways.

    .venv/bin/python scripts/check_snap_chunk.py
"""
import time
import jax
import numpy as np
from lcf_jax.comm.shipped import load_lcfx_adapter
from lcf_jax.comm import lcfx_channel
from lcf_jax.comm.agents import Agent
from lcf_jax.comm.protocols import Session, tasks_from_examples
from lcf_jax.data import sources
from lcf_jax.adapters import lcfx

cfg, params, _ = load_lcfx_adapter()
s, r = Agent.load("smollm2-135m-instruct"), Agent.load("gemma3-270m")
sess = Session(receiver=r, sharer=s, adapter=(cfg, params))
tasks = tasks_from_examples(sources.read("squad", "test", max_examples=300))
snap = jax.jit(lcfx.snap_to_vocabulary, static_argnames=("receiver_cfg", "chunk"))
diff = total = 0
for i in range(0, len(tasks), 8):
    ch = tasks[i:i + 8]
    lat = lcfx_channel.send(s, r, params, cfg, sess.sharer_rows([t.sharer_context for t in ch]), sess.question_rows(ch))
    e = lcfx.decode_embeddings(params, lat, cfg=cfg)
    ref = np.asarray(snap(e, r.params, r.config, chunk=512))
    for b in range(len(ch)):   # batch 1 (64 rows), as the latency run
        one = np.asarray(snap(e[b:b + 1], r.params, r.config, chunk=64))
        diff += int((one != ref[b:b + 1]).any(-1).sum()); total += 64
    if len(ch) < 8:
        part = np.asarray(snap(e, r.params, r.config, chunk=len(ch) * 64))
        diff += int((part != ref).any(-1).sum()); total += part.shape[0] * part.shape[1]
print(f"snapped slots differing: {diff} of {total}")
e1 = e[:1]
for c in (512, 64):
    snap(e1, r.params, r.config, chunk=c).block_until_ready()
    t = time.perf_counter(); [snap(e1, r.params, r.config, chunk=c).block_until_ready() for _ in range(3)]
    print(f"chunk {c}: {(time.perf_counter() - t) / 3:.3f} s per batch-1 message")
