"""Atomic, durable writes: the one "write to staging, fsync, rename" helper every stage uses.

  * `write_text` / `write_json`: a file is written to a temporary sibling, fsynced, swapped in with
    `os.replace` and its directory fsynced: readers see the old content or the new, never a mix.
  * `staged_dir(target)`: a directory is built under a hidden staging sibling whose name says
    which process owns it (`homefeed.lifetime.owned_dir`; a later run removes those of killed
    runs), every file and directory fsynced, then renamed into place (`replace=True`: an earlier
    directory there is moved aside first and removed after). On any error the staging directory
    is removed and nothing at `target` changed.
  * `write_with(path, write)`: the same for a writer that needs a file name (a plot's savefig).
  * `fsync_tree`, `fsync_dir`: what the ones above use.

Standard library only (base layer). Local or mounted paths only: `os.replace`/`os.rename` is what
makes the swap atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from homefeed import lifetime


def write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Writes `text` to `path` so readers see the old content or the new one, never a mix."""
    write_with(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), mode)


def write_with(path: str | os.PathLike, write: Callable[[Path], object], mode: int = 0o644) -> None:
    """`write(temporary_path)` fills a hidden sibling (`.<name>.<random>.tmp`; also for a library
    that wants a file name, e.g. a plot's savefig), which is then fsynced and swapped in with
    `os.replace`, and the directory fsynced: readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes it 0600; the reader may run as another user (a mounted publish root).
        os.chmod(tmp, mode)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2, sort_keys: bool = True) -> None:
    """`write_text` of `value` as JSON (one trailing newline)."""
    write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Makes renames and new entries in `directory` durable (where the file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """Every file under `root`, then every directory (deepest first), flushed to disk."""
    root = Path(root)
    directories = [root]
    for path in root.rglob("*"):
        if path.is_dir():
            directories.append(path)
        elif path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(directory)


def staging_prefix(target: Path) -> str:
    """The hidden name prefix of `target`'s staging siblings: `.<name>.staging-`."""
    return f".{target.name}.staging-"


def move_into_place(staging: Path, target: Path, replace: bool = False, mode: int | None = 0o755) -> None:
    """fsyncs `staging` and renames it to `target` (same parent directory), then fsyncs the parent.

    With `replace`, an existing `target` is renamed aside first and removed once the new one is in
    place; without it an existing `target` makes the rename fail (`OSError`), nothing replaced.
    """
    if mode is not None:
        os.chmod(staging, mode)  # owned_dir/mkdtemp may make it private
    fsync_tree(staging)
    previous = None
    if replace and target.exists():
        previous = target.with_name(lifetime.owned_name(f".{target.name}.previous-"))
        os.rename(target, previous)
    if not replace and target.exists():
        raise FileExistsError(f"{target} already exists (a finished output is never overwritten)")
    os.rename(staging, target)
    fsync_dir(target.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(
    target: str | os.PathLike,
    replace: bool = False,
    prefix: str | None = None,
    before_rename: Callable[[Path, Path], None] | None = None,
) -> Iterator[Path]:
    """Yields an empty staging directory beside `target`; on a clean exit it becomes `target`.

    Args:
      target: the finished directory's path; its parent is created if missing.
      replace: replace an existing `target` (else its existence is an error at the rename).
      prefix: the staging name prefix (default `.<name>.staging-`); stale ones are removed first.
      before_rename: called with (staging, target) after the body, before the rename (a test seam).

    Raises:
      whatever the body raises (the staging directory is removed); FileExistsError when `target`
      exists and `replace` is False.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = prefix or staging_prefix(target)
    lifetime.remove_stale_dirs(target.parent, prefix)  # left by runs that were killed
    lifetime.remove_stale_dirs(target.parent, f".{target.name}.previous-")
    staging = lifetime.owned_dir(target.parent, prefix)
    try:
        yield staging
        if before_rename is not None:
            before_rename(staging, target)
        move_into_place(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
