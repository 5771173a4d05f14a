"""The package's shape: imports point one way (import-linter contracts in pyproject.toml) and no module
reaches into another's private names."""
import ast
import subprocess
import sys
from pathlib import Path

from lcf_jax.paths import repo_root

ROOT = repo_root()
PACKAGE = ROOT / "lcf_jax"


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(source: str, me: str) -> list[str]:
    """`from lcf_jax.x import _y` and `x._y` where x names another lcf_jax module imported by module `me`."""
    tree = ast.parse(source)
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lcf_jax"):
            for a in node.names:
                target = f"{node.module}.{a.name}"
                if a.name.startswith("_") and node.module != me:
                    found.append(f"{me}: from {node.module} import {a.name}")
                aliases[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("lcf_jax"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            target = aliases[node.value.id]
            if target != me and not target.startswith(me + "."):
                found.append(f"{me}: {node.value.id}.{node.attr} ({target})")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [f for path in sorted(PACKAGE.rglob("*.py")) for f in private_imports(path.read_text(), _module_name(path))]
    assert not found, "\n".join(found)


def test_the_private_name_check_sees_both_forms_and_allows_its_own():
    bad = "from lcf_jax.data.pipeline import _x\nfrom lcf_jax.adapters import lcfx\nlcfx._y()\n"
    assert len(private_imports(bad, "lcf_jax.train.probe")) == 2
    own = "from lcf_jax.adapters import lcfx\nlcfx._y()\n"
    assert private_imports(own, "lcf_jax.adapters.lcfx") == []
