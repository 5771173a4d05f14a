"""Gold-choice training with a null control, Gemma3 -> SmolLM2: the seed-0 instruction-trained LCF adapter (r=256,
step 250, docs/training_run_lcf_rev_3200/adapter) trained so that SmolLM2, on the fused cache of a T0 question,
puts its choice distribution on the answer (`--teacher gold`: the answer key), while the same question with the
sharer reading an unrelated question is pulled towards SmolLM2 alone's choices (distill.control_weight). A gain
that needs no message is paid for by the control term; what is left to lower the loss is what the sharer's cache
says about its own question. The answer key is written in seconds:

    python -m lcf_jax.train.choice_targets --config=configs/gemma3_to_smollm2_lcf_gold_control.py \\
        --per-template 60 --teacher gold --out runs/choice/gold_t0_choices.jsonl
"""
from pathlib import Path

from lcf_jax.train.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).with_name("gemma3_to_smollm2_lcf_choice_distill.py"))
    c.name = "gemma3_to_smollm2_lcf_gold_control"
    c.data.choice_file = "runs/choice/gold_t0_choices.jsonl"
    c.distill.control_weight = 1.0
    c.train.steps = 300
    c.train.eval_every = 100
    c.train.ckpt_every = 100
    c.train.workdir = "runs/lcf_rev_gold_control"
    return c
