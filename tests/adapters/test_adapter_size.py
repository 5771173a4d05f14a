import pytest

from lcf_jax.adapters.c2c import C2CConfig
from lcf_jax.adapters.lcf import LCFConfig
from lcf_jax.adapters.lcfx import LCFXConfig
from lcf_jax.adapters.size import PAPER_C2C_MB_BF16, adapter_param_count, adapter_size_mb, size_table


@pytest.fixture(scope="module")
def presets():
    from lcf_jax.models.registry import PRESET_CONFIGS
    return PRESET_CONFIGS


def test_c2c_paper_pair_is_956_mb_bf16(presets):
    s, r = presets["qwen2.5-0.5b-instruct"], presets["qwen3-0.6b"]
    n = adapter_param_count(C2CConfig(), s, r)
    assert n == 28 * 17_066_002 == 477_848_056  # one projector per Qwen3 layer (last_aligned clamps)
    mb = adapter_size_mb(C2CConfig(), s, r, "bfloat16")
    assert mb == pytest.approx(PAPER_C2C_MB_BF16, rel=0.02)
    assert adapter_size_mb(C2CConfig(), s, r, "float32") == pytest.approx(2 * mb)


def test_default_lcf_is_at_most_4_percent_of_c2c(presets):
    s, r = presets["qwen2.5-0.5b-instruct"], presets["qwen3-0.6b"]
    lcf = adapter_size_mb(LCFConfig(), s, r, "bfloat16")
    c2c = adapter_size_mb(C2CConfig(), s, r, "bfloat16")
    assert lcf <= 0.04 * c2c
    assert adapter_param_count(LCFConfig(), s, r) == 28 * (256 * 256 + 256 * 2048 + 2 * 256 + 2048 + 2 * 8 + 1)


def test_size_table_for_bundled_pair(presets):
    s, r = presets["smollm2-135m-instruct"], presets["gemma3-270m"]
    table = size_table({"c2c": C2CConfig(), "lcf": LCFConfig(), "lcfx": LCFXConfig()}, s, r)
    assert "c2c" in table and "% of c2c" in table and "MB bfloat16" in table
    assert adapter_param_count(LCFXConfig(), s, r) > 0
