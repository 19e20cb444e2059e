"""A real `candidates serve` process for the serving tests: the launcher, a free port, a publish root."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port  # noqa: F401  (re-exported for the tests that start_serve)

# Only the serving commands: these tests must not depend on other stages' CLI modules.
LAUNCHER = "import sys, homefeed_cli.cli as c; c.COMMAND_MODULES = ('serving.cli',); sys.exit(c.main())"


def publish_root(model_dir: Path, root: Path, version: str = "v1") -> Path:
    """`root` as a publish root whose LATEST names a copy of `model_dir` as `version`."""
    (root / "versions").mkdir(parents=True)
    shutil.copytree(model_dir, root / "versions" / version)
    (root / "LATEST").write_text(f"{version}\n")
    return root


def start_serve(root: Path, port: int, *flags: str) -> subprocess.Popen:
    """`candidates serve --model ROOT --port PORT --no-watch FLAGS...`, its output in one text pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "serve", "--model", str(root), "--port", str(port), "--no-watch", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
