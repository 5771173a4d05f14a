"""Run configs: every shipped config parses; unknown keys and wrong types fail naming the key."""

import pytest

from lcf_jax.paths import repo_root
from lcf_jax.train import config as config_lib

CONFIGS = sorted((repo_root() / "configs").glob("*.py"))


def test_configs_exist():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path):
    c = config_lib.load_config_file(path)
    assert c.adapter.kind in config_lib.KINDS
    config_lib.adapter_config(c)  # the adapter dataclass accepts the values


def test_lcfx_recipe_is_the_same_in_both_directions():
    fwd = config_lib.load_config_file("configs/smollm2_to_gemma3_lcfx.py").to_dict()
    rev = config_lib.load_config_file("configs/gemma3_to_smollm2_lcfx.py").to_dict()
    assert (rev["model"]["sharer"], rev["model"]["receiver"]) == (fwd["model"]["receiver"], fwd["model"]["sharer"])
    for d in (fwd, rev):
        del d["model"], d["name"], d["train"]["workdir"]
    assert fwd == rev
    assert fwd["train"]["freeze"] == config_lib.LCFX_TRANSLATION_PARAMS and not fwd["adapter"]["lcfx"]["conditioned"]


def test_overrides_from_argv():
    c = config_lib.parse_argv(["--config=configs/tiny.py", "--config.train.steps=100", "--config.adapter.lcfx.slots=4",
                               "--config.train.workdir=/tmp/x"])
    assert c.train.steps == 100 and c.adapter.lcfx.slots == 4 and c.train.workdir == "/tmp/x"


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(KeyError, match="train.stepz"):
        config_lib.parse_argv(["--config=configs/tiny.py", "--config.train.stepz=3"])
    with pytest.raises(KeyError, match="no section 'trian'"):
        config_lib.parse_argv(["--config=configs/tiny.py", "--config.trian.steps=3"])


def test_wrong_type_is_rejected_with_its_name():
    with pytest.raises(TypeError, match="train.steps"):
        config_lib.parse_argv(["--config=configs/tiny.py", "--config.train.steps='many'"])


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="adapter.kind"):
        config_lib.parse_argv(["--config=configs/tiny.py", "--config.adapter.kind='lora'"])
    with pytest.raises(ValueError, match="rank"):
        config_lib.parse_argv(["--config=configs/tiny.py", "--config.adapter.lcfx.rank=0"])


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="configs/"):
        config_lib.parse_argv(["--config=configs/nope.py"])
