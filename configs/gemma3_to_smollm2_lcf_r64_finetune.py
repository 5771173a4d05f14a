"""Fine-tuning after pruning, as the paper does: the seed-0 Gemma3 -> SmolLM2 adapter cut to rank 64 by
`python -m lcf_jax.export ... --prune-rank 64` (docs/training_run_lcf_rev_3200/adapter_r64) trained on from its
cut weights with the recipe it was trained with. The adapter's shape (one rank per layer, the layers kept) must
match the exported one exactly: `train.init_adapter` refuses anything else."""
from pathlib import Path

from lcf_jax.train.config import load_config_file

PRUNED = "docs/training_run_lcf_rev_3200/adapter_r64"
RANK = 64


def get_config():
    c = load_config_file(Path(__file__).with_name("gemma3_to_smollm2_lcf_instruct30k.py"))
    c.name = "gemma3_to_smollm2_lcf_r64_finetune"
    c.adapter.lcf.layers = list(range(30))  # SmolLM2's 30 layers, all kept by the rank cut
    c.adapter.lcf.ranks = [RANK] * 30
    c.train.init_adapter = PRUNED
    c.train.workdir = "runs/lcf_rev_r64_ft"
    return c
