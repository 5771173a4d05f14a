"""Every command the README shows is one a user can paste: each `python -m lcf_jax.*` line in its bash blocks
parses with that command line's own parser (training commands also load and validate their config), and
every script it names exists. Nothing runs a model."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lcf_jax.paths import repo_root

ROOT = repo_root()


def readme_commands(path: Path = ROOT / "README.md") -> list[str]:
    """The command lines of the bash blocks: continuations joined, comments dropped, `time` removed."""
    text = path.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            line = re.sub(r"\s+#\s.*$", "", line)
            out.append(re.sub(r"^time\s+", "", line))
    return out


def _parse(module: str, args: list[str]) -> None:
    if module == "lcf_jax.train":
        from lcf_jax.train.__main__ import parse_config
        parse_config(args)
        return
    if module == "launch.tpu":
        from launch.tpu import build_parser
        build_parser().parse_known_args(args)
        return
    import importlib
    importlib.import_module(module).build_parser().parse_args(args)


COMMANDS = readme_commands()


def test_the_readme_shows_the_two_commands_first():
    assert COMMANDS[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses(command):
    argv = shlex.split(command)
    if argv[0] == "bash":
        assert (ROOT / argv[1]).is_file(), f"the README runs {argv[1]}, which does not exist"
        return
    if argv[0].endswith("python") and argv[1] == "-m":
        _parse(argv[2], argv[3:])
        return
    if argv[0].endswith("python") and argv[1] == "-c":
        compile(argv[2], "<README>", "exec")
        return
    if argv[0].endswith("python") and argv[1].endswith(".py"):
        assert (ROOT / argv[1]).is_file(), f"the README runs {argv[1]}, which does not exist"
        return
    if argv[0] in ("git", "cd", "pip", "nohup"):
        return
    pytest.fail(f"the README shows a command this test does not know how to check: {command!r}")
