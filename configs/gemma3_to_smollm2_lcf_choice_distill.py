"""Choice distillation, Gemma3 -> SmolLM2: the seed-0 instruction-trained LCF adapter (r=256, step 250,
docs/training_run_lcf_rev_3200/adapter) trained on so that SmolLM2, on the fused cache of a question, scores its
choices as Gemma3 alone does (`train/objective.choice_distill_losses`). The questions are T0 multiple-choice and
label-set templates (no evaluated set), read as T1 reads its own; Gemma3's scores are computed once:

    python -m lcf_jax.train.choice_targets --config=configs/gemma3_to_smollm2_lcf_choice_distill.py \\
        --per-template 60 --out runs/choice/gemma3_t0_choices.jsonl
"""
from pathlib import Path

from lcf_jax.train.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).with_name("gemma3_to_smollm2_lcf_instruct30k.py"))
    c.name = "gemma3_to_smollm2_lcf_choice_distill"
    c.data.choice_file = "runs/choice/gemma3_t0_choices.jsonl"
    c.data.choice_group = 4
    c.data.batch_size = 8            # questions per step (32 choice rows)
    c.data.max_sharer_len = 256      # a question (at most 600 characters) is read whole, as the teacher read it
    c.data.max_target_len = 16       # choice tokens scored (T1's choices are scored whole; these are short)
    c.train.init_adapter = "docs/training_run_lcf_rev_3200/adapter"
    c.train.lr = 3e-4
    c.train.warmup_steps = 20
    c.train.steps = 450
    c.train.eval_every = 150
    c.train.ckpt_every = 150
    c.data.mc_eval_examples = 200
    c.train.workdir = "runs/lcf_rev_choice"
    return c
