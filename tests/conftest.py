"""Test-wide settings: 8 virtual CPU devices for sharding tests, offline Hugging Face, local caches."""
import os

from lcf_jax.paths import repo_root

ROOT = repo_root()
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "hf_home"))
os.environ.setdefault("TFDS_DATA_DIR", str(ROOT / ".cache" / "tfds"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



def pytest_configure(config):
    config.addinivalue_line("markers", "real_models: loads the bundled pretrained models (minutes on CPU)")
