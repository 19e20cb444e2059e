"""The package layers hold: the base package imports nothing above it, nothing imports the CLI
package, and library modules stay small (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_PACKAGES = ("homefeed", "homefeed_cli", "components", "pipeline", "trainer", "serving", "sql")
ABOVE_BASE = ("homefeed_cli", "components", "pipeline", "trainer", "serving", "sql", "kfp")
MAX_LINES = 420  # "about 400"
LONG_ON_PURPOSE = {"homefeed/sample_data.py"}  # the generated world's rules, one table after another


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def top_level(name: str) -> str:
    return name.split(".")[0]


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_imported_modules_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import os\ndef f():\n    from serving import app\n    import pipeline.cli\n")
    assert imported_modules(sample) == {"os", "serving", "pipeline.cli"}


@pytest.mark.parametrize("path", modules("homefeed"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_base_package_imports_nothing_above_it(path):
    above = sorted(n for n in imported_modules(path) if top_level(n) in ABOVE_BASE)
    assert not above, f"{path.relative_to(ROOT)} (base layer) imports {above}"


@pytest.mark.parametrize("package", [p for p in LIBRARY_PACKAGES if p != "homefeed_cli"])
def test_no_library_module_imports_the_cli_package(package):
    offenders = [
        p.relative_to(ROOT).as_posix() for p in modules(package) if any(top_level(n) == "homefeed_cli" for n in imported_modules(p))
    ]
    assert not offenders, f"{offenders} import homefeed_cli (stage CLIs raise homefeed.errors.CommandError)"


def test_library_modules_stay_small():
    too_long = {
        path.relative_to(ROOT).as_posix(): n
        for package in LIBRARY_PACKAGES
        for path in modules(package)
        if (n := len(path.read_text().splitlines())) > MAX_LINES and path.relative_to(ROOT).as_posix() not in LONG_ON_PURPOSE
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them by role): {too_long}"
