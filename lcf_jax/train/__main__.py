"""python -m lcf_jax.train --config=configs/X.py [--config.train.steps=100 ...] [--debug]"""
import sys
from pathlib import Path

from lcf_jax.cli_errors import UserError, one_line, run_main


def parse_config(argv: list[str]):
    """The run config; a bad flag, file, key, type or value is a UserError naming it (JAX has not started)."""
    from lcf_jax.train import config as config_lib
    try:
        return config_lib.parse_argv(argv)
    except FileNotFoundError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, SyntaxError, NameError) as e:
        message = one_line(e)
        raise UserError(message if message.startswith("config") else f"config: {message}") from e


def preflight(cfg) -> None:
    """What the loop would find only after loading the models: unknown models, a missing init adapter, frozen
    parameter names the adapter does not have, stage-1 pre-training for a kind that has none."""
    from lcf_jax.models import registry
    known = {**registry.BUNDLED, **registry.TINY_CONFIGS}
    for role in ("sharer", "receiver"):
        name = cfg.model[role]
        if name in registry.PRESET_CONFIGS and name not in known:
            raise UserError(f"config: model.{role}={name!r} is a config-only preset: there are no weights for it here "
                            f"(training loads bundled {sorted(registry.BUNDLED)} or tiny models); check a pod launch "
                            "with `python -m launch.tpu check`")
        if name not in known:
            raise UserError(f"config: model.{role}={name!r} is unknown; bundled models {sorted(registry.BUNDLED)}, tiny "
                            f"test models {sorted(registry.TINY_CONFIGS)}")
    if cfg.data.mc_eval_examples > 0 and cfg.data.task != "instruct":
        raise UserError("config: data.mc_eval_examples > 0 scores text with the models' tokenizers: it needs "
                        f"data.task='instruct' (got {cfg.data.task!r}); set data.mc_eval_examples=0")
    if cfg.train.init_adapter and not (Path(cfg.train.init_adapter) / "adapter.json").exists():
        raise UserError(f"config: train.init_adapter={cfg.train.init_adapter!r} holds no exported adapter (adapter.json)")
    if cfg.data.targets_file and not Path(cfg.data.targets_file).is_file():
        raise UserError(f"config: data.targets_file={cfg.data.targets_file!r} does not exist: write it with python -m "
                        "lcf_jax.train.sharer_targets --config=<this config> --out <file>")
    source = cfg.pretrain.translation_from
    if source and not (Path(source) / "adapter.json").exists():
        raise UserError(f"config: pretrain.translation_from={source!r} holds no exported adapter (adapter.json)")
    if cfg.pretrain.steps > 0 and cfg.adapter.kind != "lcfx":
        raise UserError(f"config: pretrain.steps > 0 is the LCF-X latent-alignment stage; set it to 0 for "
                        f"adapter.kind={cfg.adapter.kind!r}")
    if cfg.train.freeze:
        import jax

        from lcf_jax.adapters import ADAPTER_KINDS
        from lcf_jax.train import config as config_lib
        configs = [registry.config_by_name(n) for n in (cfg.model.sharer, cfg.model.receiver)]
        init = ADAPTER_KINDS[cfg.adapter.kind].init
        key = jax.ShapeDtypeStruct((2,), jax.numpy.uint32)  # abstract: no backend starts before jax.distributed
        names = set(jax.eval_shape(lambda k: init(k, config_lib.adapter_config(cfg), *configs), key))
        unknown = sorted(set(cfg.train.freeze) - names)
        if unknown:
            raise UserError(f"config: train.freeze names {unknown}, which are not parameters of this "
                            f"{cfg.adapter.kind} adapter; its parameters: {sorted(names)}")
    workdir = cfg.train.workdir
    if "://" not in workdir and Path(workdir).exists() and not Path(workdir).is_dir():
        raise UserError(f"config: train.workdir={workdir!r} is a file; give a directory")


def _main(argv: list[str]) -> None:
    cfg = parse_config(argv)
    preflight(cfg)
    from lcf_jax.eval import during_training  # after the checks: a bad flag fails before JAX starts
    from lcf_jax.train import loop
    last = loop.train(cfg, make_evaluate=during_training.make_train_evaluator)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()})


def main(argv=None) -> None:
    run_main(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
