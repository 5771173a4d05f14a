"""Launch adapter training on a Cloud TPU pod slice, as N local processes, or on a GPU cluster.

TPU pod (queued resource -> code + requirements on every worker -> train on all workers -> delete):
  python -m launch.tpu [create|setup|run|logs|stop|teardown|all|check] --config=configs/X.py --tpu=v5e-32 \
      --name=NAME --zone=ZONE --project=PROJECT [--bucket=gs://BUCKET] [--spot] [--dry-run] [--skip-compile] \
      [--config.train.steps=...]
  (default action: all = create, setup, run). Everything is checked before anything is reserved: the config
  parses, the mesh fits the slice's chips, the global batch divides the data axis, and the train step
  lowers and compiles ahead of time (for the TPU topology when libtpu is installed, else on a CPU mesh of
  the same shape). --dry-run prints the exact commands and runs nothing.

One machine, N processes (CPU devices; what the tests use):
  python -m launch.tpu --local-processes=2 --devices-per-process=4 --config=configs/tiny.py [--config.x=y ...]

GPU clusters (printed, not run):
  python -m launch.tpu --print-slurm --nodes=2 --gpus-per-node=8 --config=... [--repo-dir=/path/to/repo]
  python -m launch.tpu --print-ssh --hosts=h0,h1 --gpus-per-node=8 --config=...

Rerunning the same command after a crash or preemption resumes from the latest checkpoint in the workdir.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch import checks, gcloud, local, slices
from launch.checks import ROOT, LaunchError
from lcf_jax.cli_errors import ArgumentParser, run_main

ACTIONS = ("all", "create", "setup", "run", "logs", "stop", "teardown", "check")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                       epilog="Config overrides: any --config.section.key=value is passed to the training run.")
    p.add_argument("action", nargs="?", default="all", choices=ACTIONS,
                   help="TPU pod step (default all = create, setup, run; check = validation only)")
    p.add_argument("--config", help="configs/X.py")
    g = p.add_argument_group("TPU pod")
    g.add_argument("--tpu", help="slice type: v4-N, v5e-N (= v5litepod-N), v5p-N, v6e-N")
    g.add_argument("--name", help="queued-resource and TPU node name")
    g.add_argument("--zone")
    g.add_argument("--project")
    g.add_argument("--bucket", help="gs://BUCKET: workdir (Orbax checkpoints) becomes gs://BUCKET/NAME")
    g.add_argument("--spot", action="store_true", help="request Spot capacity (preemptible)")
    g.add_argument("--runtime-version", help="override the TPU software version")
    g.add_argument("--python", default="python3.11", help="Python on the TPU VMs (jax needs >= 3.11)")
    g.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    g.add_argument("--skip-compile", action="store_true", help="skip the ahead-of-time compile check")
    g.add_argument("--max-cpu-devices", type=int, default=64,
                   help="largest CPU mesh for the compile check; bigger slices shrink the data axis")
    g.add_argument("--compile-timeout", type=int, default=900)
    g.add_argument("--force", action="store_true", help="launch despite warnings")
    l = p.add_argument_group("local multi-process")
    l.add_argument("--local-processes", type=int, help="run N processes on 127.0.0.1")
    l.add_argument("--devices-per-process", type=int, default=1, help="CPU devices per local process")
    l.add_argument("--timeout", type=float, help="seconds before a local run is stopped")
    c = p.add_argument_group("GPU cluster recipes")
    c.add_argument("--print-slurm", action="store_true")
    c.add_argument("--print-ssh", action="store_true")
    c.add_argument("--nodes", type=int, default=2)
    c.add_argument("--gpus-per-node", type=int, default=8)
    c.add_argument("--hosts", help="comma-separated hosts for --print-ssh (first = coordinator)")
    c.add_argument("--repo-dir", default="$HOME/lcf_jax", help="repository path on the cluster")
    c.add_argument("--port", type=int, default=12345, help="coordinator port (--print-ssh)")
    c.add_argument("--time", default="24:00:00", help="Slurm time limit")
    return p


def parse_args(argv: list[str]):
    args, rest = build_parser().parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        raise LaunchError(f"unknown arguments {bad}; config overrides look like --config.train.steps=100")
    for flag in ("nodes", "gpus_per_node", "max_cpu_devices", "compile_timeout", "devices_per_process"):
        if getattr(args, flag) < 1:
            raise LaunchError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if not 0 < args.port < 65536:
        raise LaunchError(f"--port must be in 1..65535, got {args.port}")
    if args.timeout is not None and args.timeout <= 0:
        raise LaunchError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    return args, rest


def _report(title: str, notes: list, warnings: list) -> list[str]:
    out = [f"# {title}"]
    out += [f"#   {label:<9}{text}" for label, text in notes]
    out += [f"#   WARNING  {w}" for w in warnings]
    return out


def _config_arg(config_path: str) -> tuple[str, tuple]:
    """(path the workers use, extra files to copy): repo-relative, or the file copied next to the code."""
    p = Path(config_path).resolve()
    try:
        return p.relative_to(ROOT).as_posix(), ()
    except ValueError:
        return p.name, (str(p),)


def _require(args, *names):
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise LaunchError(f"missing {', '.join(missing)}")


def _compile_check(args, overrides, plan, slc) -> tuple[list, list]:
    if args.skip_compile:
        return [("compile", "skipped (--skip-compile)")], []
    d, m, b = checks.scaled_mesh(plan.data, plan.model, plan.batch, args.max_cpu_devices)
    scaled = "" if (d, b) == (plan.data, plan.batch) else (
        f" (scaled from data={plan.data}, batch {plan.batch}: same per-device batch)")
    print(f"compiling the train step ahead of time on {d * m} devices (about 20-60 s) ...", file=sys.stderr,
          flush=True)
    same = slc is not None and plan.devices == slc.chips and (d, b) == (plan.data, plan.batch)
    topo = slc.jax_topology_name if same else None  # TPU AOT only for the whole, unscaled slice
    res = checks.aot_compile(args.config, overrides, d, m, b, tpu_topology=topo,
                             chip_config=slc.family.chip_config if slc else "default", timeout=args.compile_timeout)
    for target in ("tpu", "cpu"):
        if res.get(target):
            s = res[target]["seconds"]
            print(f"{target} compile: build {s['build']} s, lower {s['lower']} s, compile {s['compile']} s",
                  file=sys.stderr)
    return checks.describe_aot(res, slc.family.hbm_gib if slc else None, scaled)


def main_tpu(args, overrides) -> int:
    if args.action in ("logs", "stop", "teardown"):
        _require(args, "tpu", "name", "zone", "project")
        slc = slices.parse(args.tpu)
        t = gcloud.Target(slc, args.name, args.zone, args.project)
        steps = {"logs": gcloud.logs_steps, "stop": gcloud.stop_steps, "teardown": gcloud.teardown_steps}[args.action](t)
        return _emit(args, steps, [])
    _require(args, "config", "tpu")
    slc = slices.parse(args.tpu)
    if args.action != "check":
        _require(args, "name", "zone", "project")
    if args.bucket:
        if not args.bucket.startswith("gs://"):
            raise LaunchError(f"--bucket must be a gs:// URL, got {args.bucket!r}")
        overrides = [*overrides, f"--config.train.workdir={args.bucket.rstrip('/')}/{args.name or 'run'}"]
    plan = checks.plan(args.config, overrides, slc.chips, slc.name)
    workdir = plan.cfg.train.workdir
    warnings = list(plan.warnings)
    if not workdir.startswith("gs://") or "YOUR_BUCKET" in workdir:
        msg = (f"train.workdir={workdir!r}: a pod run needs a gs:// workdir that every worker shares (Orbax "
               f"checkpoints, resume): pass --bucket=gs://BUCKET or --config.train.workdir=gs://...")
        if args.action in ("all", "run"):
            raise LaunchError(msg)
        warnings.append(msg)
    notes = [("slice", slc.describe()), *plan.notes,
             ("workdir", f"{workdir} (checkpoints in {workdir}/checkpoints; metrics.jsonl/TensorBoard are written "
                         f"only for local workdirs, so follow the log)")]
    c_notes, c_warn = _compile_check(args, overrides, plan, slc)
    notes += c_notes
    warnings += c_warn
    mode = ("dry run: nothing is executed" if args.dry_run else "checks only, nothing is reserved"
            if args.action == "check" else "executing")
    header = _report(f"lcf_jax TPU launch: {args.action} on {slc.name} with {args.config} ({mode})", notes, warnings)
    if args.action == "check":
        print("\n".join(header))
        return 0
    t = gcloud.Target(slc, args.name, args.zone, args.project, spot=args.spot,
                      runtime_version=args.runtime_version, python=args.python)
    config_arg, extra = _config_arg(args.config)
    parts = {"create": lambda: gcloud.create_steps(t), "setup": lambda: gcloud.setup_steps(t, extra),
             "run": lambda: gcloud.run_steps(t, config_arg, overrides)}
    order = ["create", "setup", "run"] if args.action == "all" else [args.action]
    if args.dry_run:
        lines = list(header)
        for i, name in enumerate(order, 1):
            lines += ["", f"## {i}. {name}", *gcloud.render(parts[name]())]
        if args.action == "all":
            lines += ["", "## when done (or to stop paying): teardown",
                      *gcloud.render(gcloud.teardown_steps(t))]
        print("\n".join(lines))
        return 0
    print("\n".join(header), flush=True)
    if warnings and not args.force:
        raise LaunchError("warnings above: fix them or pass --force to launch anyway")
    for name in order:
        gcloud.execute(parts[name]())
    return 0


def _emit(args, steps, header) -> int:
    if args.dry_run:
        print("\n".join([*header, *gcloud.render(steps)]))
    else:
        gcloud.execute(steps)
    return 0


def main_local(args, overrides) -> int:
    _require(args, "config")
    n, d = args.local_processes, args.devices_per_process
    if n < 1 or d < 1:
        raise LaunchError("--local-processes and --devices-per-process must be >= 1")
    plan = checks.plan(args.config, overrides, n * d, f"{n} local processes x {d} CPU devices")
    port = local.free_port()
    header = _report(f"lcf_jax local run: {n} processes x {d} CPU devices with {args.config}", plan.notes,
                     plan.warnings)
    p = Path(args.config).resolve()  # the processes run in the repository root
    config_arg = p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else str(p)
    print("\n".join([*header, "# from the repository root:", *local.local_commands(config_arg, overrides, n, d, port)]),
          flush=True)
    if args.dry_run:
        return 0
    return local.run_local(config_arg, overrides, n, d, timeout=args.timeout, port=port)


def main_cluster(args, overrides) -> int:
    _require(args, "config")
    if args.print_ssh:
        _require(args, "hosts")
        hosts = [h for h in args.hosts.split(",") if h]
        devices = len(hosts) * args.gpus_per_node
    else:
        devices = args.nodes * args.gpus_per_node
    where = f"{devices // args.gpus_per_node} nodes x {args.gpus_per_node} GPUs"
    plan = checks.plan(args.config, overrides, devices, where)
    warnings = list(plan.warnings)
    wd = plan.cfg.train.workdir
    if "://" not in wd and not wd.startswith("/"):
        warnings.append(f"train.workdir={wd!r} is relative: on a cluster it must be on a filesystem every node "
                        f"shares (or gs://), e.g. --config.train.workdir=/shared/runs/NAME")
    report = _report(f"lcf_jax GPU cluster recipe: {where} with {args.config}", plan.notes, warnings)
    config_arg, _ = _config_arg(args.config)
    if args.print_slurm:  # the report goes after the shebang: the output is the sbatch file
        print(local.slurm_script(config_arg, overrides, plan.cfg.name, args.nodes, args.gpus_per_node,
                                 args.repo_dir, args.time, header=tuple(report)), end="")
        return 0
    print("\n".join(report))
    if args.print_ssh:
        print(local.ssh_recipe(config_arg, overrides, hosts, args.gpus_per_node, args.repo_dir, args.port), end="")
    return 0


def _main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if args.local_processes is not None:
        return main_local(args, overrides)
    if args.print_slurm or args.print_ssh:
        return main_cluster(args, overrides)
    return main_tpu(args, overrides)


def main(argv=None) -> int:
    """Exit code 0; a LaunchError (or any user error) prints `error: ...` and exits 2 (SystemExit)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
