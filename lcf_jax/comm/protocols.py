"""Communication protocols between a sharer agent (holds the context) and a receiver (gets the question).

Every protocol answers the same `QATask`s and returns one `Reply` per task: the answer, the bytes
that crossed from sharer to receiver, and (when timed) the latency split into phases:
sharer_prefill, sharer_decode (text only), adapter, receiver_prefill, receiver_decode.

  alone    the receiver answers from the question only
  oracle   the receiver reads the sharer's context itself (an upper reference, no communication)
  text     the sharer writes a message of at most B tokens (without or with the question); the
           receiver reads message + question
  lcfx     the sharer's cache is compressed to an m x r latent message; the receiver attends to it
           as extra KV slots (`lcfx_channel.py`)
  lcfx_control   LCF-X fed the cache of an unrelated passage of the same length: what the adapter
           teaches without carrying information (answer format), to subtract from the LCF-X gain
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.comm import lcfx_channel
from lcf_jax.comm.agents import Agent, first_line, generate_answers, pad_rows, prefill_cache
from lcf_jax.models import generate as gen_lib
from lcf_jax.models import transformer

PROMPTS = {
    # question-only prompt: also the one LCF-X adapters are trained with (configs: data.prompt_template)
    "question": "Question: {question}\nAnswer:",
    "context_0shot": "Context: {context}\nQuestion: {question}\nAnswer:",
    "context_1shot": ("Context: The Eiffel Tower was completed in 1889 for the World's Fair in Paris.\n"
                      "Question: When was the Eiffel Tower completed?\nAnswer: 1889\n\n"
                      "Context: {context}\nQuestion: {question}\nAnswer:"),
}
SHARER_PROMPTS = {
    "summary": "Summarize the key facts of this passage in a few short sentences.\n\n{context}",
    "with_question": ("Read the passage and write the facts needed to answer the question.\n\n{context}\n\n"
                      "Question: {question}"),
}
PROTOCOLS = ("alone", "oracle", "text", "lcfx", "lcfx_control")


@dataclasses.dataclass(frozen=True)
class QATask:
    id: str
    sharer_context: str
    question: str
    answers: tuple[str, ...] = ()


@dataclasses.dataclass
class Reply:
    id: str
    answer: str
    bytes_sent: int
    latency: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return float(sum(self.latency.values()))


def tasks_from_examples(examples: Sequence[dict]) -> list[QATask]:
    return [QATask(str(e.get("id", i)), e["sharer_context"], e["question"], tuple(e.get("answers") or ()))
            for i, e in enumerate(examples)]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


@dataclasses.dataclass
class Session:
    """The agents and settings every protocol shares. `adapter` = (LCFXConfig, params) for lcfx."""
    receiver: Agent
    sharer: Optional[Agent] = None
    adapter: Optional[tuple[Any, Any]] = None
    max_new_tokens: int = 16
    max_context_tokens: int = 256
    context_prompt: str = "context_1shot"
    batch_size: int = 8

    # -- prompt construction -----------------------------------------------------------------
    def truncate_text(self, agent: Agent, text: str, n: int) -> str:
        ids = agent.encode(text, special=False)[:n]
        return agent.decode(ids)

    def question_rows(self, tasks: Sequence[QATask]) -> list[list[int]]:
        return [self.receiver.encode(PROMPTS["question"].format(question=t.question)) for t in tasks]

    def context_rows(self, tasks: Sequence[QATask], contexts: Sequence[str]) -> list[list[int]]:
        tpl = PROMPTS[self.context_prompt]
        return [self.receiver.encode(tpl.format(context=c, question=t.question)) for t, c in zip(tasks, contexts)]

    def sharer_rows(self, contexts: Sequence[str]) -> list[list[int]]:
        prefix = self.sharer.encode("", special=True)
        return [prefix + self.sharer.encode(c, special=False)[: self.max_context_tokens - len(prefix)] for c in contexts]

    # -- protocols ----------------------------------------------------------------------------
    def _batched(self, tasks, fn) -> list[Reply]:
        out: list[Reply] = []
        for i in range(0, len(tasks), self.batch_size):
            out.extend(fn(tasks[i:i + self.batch_size]))
        return out

    def alone(self, tasks: Sequence[QATask]) -> list[Reply]:
        return self._batched(tasks, lambda ch: [Reply(t.id, a, 0) for t, a in zip(ch, generate_answers(
            self.receiver, self.question_rows(ch), max_new_tokens=self.max_new_tokens))])

    def oracle(self, tasks: Sequence[QATask]) -> list[Reply]:
        def run(ch):
            ctx = [self.truncate_text(self.receiver, t.sharer_context, self.max_context_tokens) for t in ch]
            answers = generate_answers(self.receiver, self.context_rows(ch, ctx), max_new_tokens=self.max_new_tokens)
            return [Reply(t.id, a, 0) for t, a in zip(ch, answers)]
        return self._batched(tasks, run)

    def text_messages(self, tasks: Sequence[QATask], budget: int, with_question: bool) -> list[str]:
        tpl = SHARER_PROMPTS["with_question" if with_question else "summary"]
        rows = []
        for t in tasks:
            ctx = self.truncate_text(self.sharer, t.sharer_context, self.max_context_tokens)
            content = tpl.format(context=ctx, question=t.question)
            if self.sharer.tokenizer.chat_template:
                ids = self.sharer.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                                add_generation_prompt=True, tokenize=True)
                ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            else:
                ids = self.sharer.encode(content + "\nSummary:")
            rows.append(ids)
        tokens, mask = pad_rows(rows, self.sharer.config.pad_token_id, 64)
        g = gen_lib.generate(self.sharer.params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(0),
                             config=self.sharer.config, max_new_tokens=budget)
        out, lengths = np.asarray(g.tokens), np.asarray(g.lengths)
        return [self.sharer.decode(out[i, :lengths[i]]).strip() for i in range(len(rows))]

    def text(self, tasks: Sequence[QATask], budget: int = 64, with_question: bool = False) -> list[Reply]:
        def run(ch):
            msgs = self.text_messages(ch, budget, with_question)
            answers = generate_answers(self.receiver, self.context_rows(ch, msgs), max_new_tokens=self.max_new_tokens)
            return [Reply(t.id, a, len(m.encode("utf-8"))) for t, a, m in zip(ch, answers, msgs)]
        return self._batched(tasks, run)

    def lcfx(self, tasks: Sequence[QATask], contexts: Optional[Sequence[str]] = None,
             quantize: Optional[str] = None) -> list[Reply]:
        cfg, params = self.lcfx_adapter()

        def run(idx):
            ch = [tasks[i] for i in idx]
            ctx = [contexts[i] if contexts is not None else tasks[i].sharer_context for i in idx]
            answers, nbytes = lcfx_channel.answer(self.sharer, self.receiver, params, cfg, self.sharer_rows(ctx),
                                                  self.question_rows(ch), max_new_tokens=self.max_new_tokens,
                                                  quantize=quantize)
            return [Reply(t.id, a, nbytes) for t, a in zip(ch, answers)]
        return self._batched(list(range(len(tasks))), run)

    def lcfx_control(self, tasks: Sequence[QATask]) -> list[Reply]:
        """LCF-X with each task given an unrelated passage (half the list away), cut to the same length."""
        n = len(tasks)
        if n < 2:
            raise ValueError("the control needs at least two tasks to swap passages")
        swapped = []
        for i, t in enumerate(tasks):
            other = tasks[(i + n // 2) % n].sharer_context
            own_len = len(self.sharer.encode(t.sharer_context, special=False))
            swapped.append(self.sharer.decode(self.sharer.encode(other, special=False)[:own_len]))
        return self.lcfx(tasks, contexts=swapped)

    def lcfx_multi(self, tasks: Sequence[QATask], contexts_a: Sequence[str], contexts_b: Sequence[str]) -> list[Reply]:
        """Two sharers (two contexts) send one message each; the receiver attends to both (2m slots)."""
        cfg, params = self.lcfx_adapter()
        q = self.question_rows(tasks)
        lat_a = lcfx_channel.send(self.sharer, self.receiver, params, cfg, self.sharer_rows(contexts_a), q)
        lat_b = lcfx_channel.send(self.sharer, self.receiver, params, cfg, self.sharer_rows(contexts_b), q)
        ea = lcfx_channel.receive(self.receiver, params, cfg, lat_a)
        eb = lcfx_channel.receive(self.receiver, params, cfg, lat_b)
        extra = type(ea)(jnp.concatenate([ea.keys, eb.keys], 3), jnp.concatenate([ea.values, eb.values], 3),
                         jnp.concatenate([ea.mask, eb.mask], 1))
        answers = generate_answers(self.receiver, q, max_new_tokens=self.max_new_tokens, extra_kv=extra)
        nbytes = 2 * int(lat_a[:1].size * lat_a.dtype.itemsize)
        return [Reply(t.id, a, nbytes) for t, a in zip(tasks, answers)]

    def lcfx_two_rounds(self, tasks: Sequence[QATask]) -> list[Reply]:
        """Round 1: LCF-X answer. Round 2: the receiver's reply goes back to the sharer (as text appended
        to its context), which sends a new message; the receiver answers again."""
        first = self.lcfx(tasks)
        contexts = [f"{t.sharer_context}\nProposed answer to \"{t.question}\": {r.answer}" for t, r in zip(tasks, first)]
        second = self.lcfx(tasks, contexts=contexts)
        for r1, r2 in zip(first, second):
            r2.bytes_sent += r1.bytes_sent + len(r1.answer.encode("utf-8"))
        return second

    def lcfx_adapter(self):
        if self.adapter is None or self.sharer is None:
            raise ValueError("protocol lcfx needs a sharer agent and an adapter (LCFXConfig, params)")
        return self.adapter

    # -- latency -------------------------------------------------------------------------------
    def time_one(self, protocol: str, task: QATask, repeats: int = 3, budget: int = 64) -> dict[str, float]:
        """Median per-phase latency (s) of answering one task at batch 1; the first run compiles and
        is discarded."""
        runs = [self._phases(protocol, task, budget) for _ in range(repeats + 1)][1:]
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    def _positioned_prefill_time(self, params, cfg, latents, rows) -> float:
        """Seconds to build the message prefix and prefill the prompt after it (one forward, no decoding)."""
        _, t = _timed(lambda: lcfx_channel.answer_positioned(self.receiver, params, cfg, latents, rows, max_new_tokens=1))
        return t

    def _phases(self, protocol: str, task: QATask, budget: int) -> dict[str, float]:
        ph: dict[str, float] = {}
        extra = None
        if protocol == "text":
            rows = None
            ctx = self.truncate_text(self.sharer, task.sharer_context, self.max_context_tokens)
            s_tok, s_mask = pad_rows(self.sharer_rows([ctx]), self.sharer.config.pad_token_id, 64)
            _, ph["sharer_prefill"] = _timed(lambda: prefill_cache(self.sharer.params, jnp.asarray(s_tok),
                                                                   jnp.asarray(s_mask), config=self.sharer.config))
            msgs, total = _timed(lambda: self.text_messages([task], budget, False))
            ph["sharer_decode"] = max(total - ph["sharer_prefill"], 0.0)
            rows = self.context_rows([task], msgs)
        elif protocol in ("lcfx", "lcfx_control"):
            cfg, params = self.lcfx_adapter()
            s_tok, s_mask = pad_rows(self.sharer_rows([task.sharer_context]), self.sharer.config.pad_token_id, 64)
            s_cache, ph["sharer_prefill"] = _timed(lambda: prefill_cache(
                self.sharer.params, jnp.asarray(s_tok), jnp.asarray(s_mask), config=self.sharer.config))
            rows = self.question_rows([task])
            r_cache = None
            if cfg.conditioned:
                r_tok, r_mask = pad_rows(rows, self.receiver.config.pad_token_id, 32)
                # the conditioned variant's back-channel: the receiver reads its prompt before the message
                r_cache, ph["receiver_summary"] = _timed(lambda: prefill_cache(
                    self.receiver.params, jnp.asarray(r_tok), jnp.asarray(r_mask), config=self.receiver.config))
            latents, ph["adapter"] = _timed(lambda: lcfx_channel.encode(
                params, s_cache, r_cache, cfg=cfg, sharer_cfg=self.sharer.config, receiver_cfg=self.receiver.config))
            if cfg.injection != "positioned":  # the decoder's K/V belong to the adapter's phase
                extra, t_dec = _timed(lambda: lcfx_channel.receive(self.receiver, params, cfg, latents))
                ph["adapter"] += t_dec
            else:  # the receiver's half: the message prefix, then the prompt after it
                _, total = _timed(lambda: lcfx_channel.answer_positioned(
                    self.receiver, params, cfg, latents, rows, max_new_tokens=self.max_new_tokens))
                ph["receiver_prefill"] = self._positioned_prefill_time(params, cfg, latents, rows)
                ph["receiver_decode"] = max(total - ph["receiver_prefill"], 0.0)
                return ph
        elif protocol == "oracle":
            ctx = self.truncate_text(self.receiver, task.sharer_context, self.max_context_tokens)
            rows = self.context_rows([task], [ctx])
        elif protocol == "alone":
            rows = self.question_rows([task])
        else:
            raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
        tokens, mask = pad_rows(rows, self.receiver.config.pad_token_id, 32)
        cache = transformer.KVCache.empty(self.receiver.config, 1, tokens.shape[1] + self.max_new_tokens)
        _, ph["receiver_prefill"] = _timed(lambda: transformer.prefill(
            self.receiver.params, jnp.asarray(tokens), jnp.asarray(mask), cache, config=self.receiver.config,
            extra_kv=extra))
        _, total = _timed(lambda: gen_lib.generate(self.receiver.params, jnp.asarray(tokens), jnp.asarray(mask),
                                                   jax.random.PRNGKey(0), config=self.receiver.config,
                                                   max_new_tokens=self.max_new_tokens, extra_kv=extra))
        ph["receiver_decode"] = max(total - ph["receiver_prefill"], 0.0)
        return ph


def run_protocol(session: Session, protocol: str, tasks: Sequence[QATask], **kw) -> list[Reply]:
    fns = {"alone": session.alone, "oracle": session.oracle, "text": session.text, "lcfx": session.lcfx,
           "lcfx_control": session.lcfx_control}
    if protocol not in fns:
        raise ValueError(f"unknown protocol {protocol!r}; known: {sorted(fns)}")
    return fns[protocol](tasks, **kw)


__all__ = ["PROMPTS", "PROTOCOLS", "QATask", "Reply", "Session", "run_protocol", "tasks_from_examples", "first_line"]
