"""Library modules stay small (docs/architecture.md, "Layers"). The import layers themselves are
import-linter contracts in pyproject.toml, checked by `make lint`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_PACKAGES = ("homefeed", "homefeed_cli", "components", "pipeline", "trainer", "serving", "sql")
MAX_LINES = 420  # "about 400"
LONG_ON_PURPOSE = {
    "homefeed/sample/marketplace.py",  # the generated world's rules, one table after another
    "homefeed/config.py",  # every stage's typed settings, one documented field after another
}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_library_modules_stay_small():
    too_long = {
        path.relative_to(ROOT).as_posix(): n
        for package in LIBRARY_PACKAGES
        for path in modules(package)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and path.relative_to(ROOT).as_posix() not in LONG_ON_PURPOSE
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them by role): {too_long}"
