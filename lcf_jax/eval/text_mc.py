"""T1's text-to-text row: the sharer answers the question in text and the receiver reads that answer before it
scores the choices. In T1 both models read the question but not the choices (each choice is a continuation), so
the sharer's own answer is what text can carry that the receiver lacks: what the sharer knows, not what it read.

The message is the sharer's greedy answer to the question prompt both models read (`shared_mc.MC_PROMPT`, first
line, at most `max_new_tokens`); the receiver scores " {choice}" after `TEXT_MC_PROMPT`. Its control gives the
receiver the sharer's answer to an unrelated question of the same set (`tables.unrelated_question`'s pairing): a
gain the control shares is the prompt's format, not the sharer's knowledge.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

TEXT_MC_PROMPT = "Question: {question}\nAnother model's answer: {message}\nAnswer:"
MAX_NEW_TOKENS = 16


def row_name(sharer_name: str, receiver_name: str) -> str:
    """The text-to-text row's name in T1 and beside it (its kept rows are found by it)."""
    return f"text-to-text ({sharer_name} → {receiver_name})"


def fingerprint(sharer_name: str, receiver_name: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """What a text row's scores depend on besides the questions: both models, the prompt and the answer length."""
    from lcf_jax.eval.shared_mc import MC_PROMPT

    prompts = hashlib.sha256((MC_PROMPT + "\x00" + TEXT_MC_PROMPT).encode()).hexdigest()[:12]
    return f"text:{sharer_name}->{receiver_name}:{prompts}:{max_new_tokens}"


def sharer_answers(agent, questions: Sequence[str], *, max_new_tokens: int = MAX_NEW_TOKENS,
                   batch_size: int = 16) -> list[str]:
    """The sharer's greedy answer (first line) to each question's MC prompt, batched shortest first."""
    from lcf_jax.comm.agents import generate_answers
    from lcf_jax.eval.shared_mc import MC_PROMPT
    from lcf_jax.models.generate import in_length_order

    rows = [agent.encode(MC_PROMPT.format(question=q)) for q in questions]
    return in_length_order(rows, batch_size, lambda batch: generate_answers(agent, batch, max_new_tokens=max_new_tokens))


def text_prompt(question: str, message: str) -> str:
    return TEXT_MC_PROMPT.format(question=question, message=message.strip())
