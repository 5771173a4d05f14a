"""python -m lcf_jax.train --config=configs/X.py [--config.train.steps=100 ...]"""
import sys

from lcf_jax.train import config as config_lib


def main(argv=None) -> None:
    cfg = config_lib.parse_argv(list(sys.argv[1:] if argv is None else argv))
    from lcf_jax.train import loop  # after parsing: a bad flag fails before JAX starts
    last = loop.train(cfg)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()})


if __name__ == "__main__":
    main()
