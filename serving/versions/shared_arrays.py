"""Arrays derived from a model version, shared by the worker processes of one service through files.

`candidates serve --workers N` starts N processes (uvicorn spawns them: nothing is shared by fork),
so whatever a worker builds in its own memory, every worker holds once more. The per-article
tables (ids, the id -> row lookup, titles, attributes, the region-sorted vectors of filtered
search) are therefore built once, by whichever worker comes first, written to files and
memory-mapped read-only by all: one copy in the page cache, none in any worker's private memory.

Layout under the root (one directory per `serve`, made by it for its workers; removed when it
exits): `<key>/<name>/` holds one `.npy` per array or `.bin` per byte string and `arrays.json`,
written last, with each file's size and sha256. `key` names the model version's inputs (hashes
the model load has just verified), so two versions never share an entry and a rebuilt version
with other files gets a new one.

* Written once, atomically: the first worker builds under an exclusive lock into a hidden staging
  directory, then renames it into place; the others wait for the lock and map the result.
* Hash-checked like MODEL_DIR: every file is hashed against `arrays.json` before it is mapped;
  an entry that does not match (changed on disk) is never used: it is removed and rebuilt from
  the model's verified files.
* Old entries go: after writing an entry, all but the `KEEP_ENTRIES` newest keys are removed
  (a worker still mapping one keeps its pages until it lets go; Linux unlinks, never truncates).

Without a root (`SharedArrays(None)`: one process, tests) the same builders run and their arrays
stay in this process's memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from homefeed.layout.model_dir import sha256_file
from serving.versions.process_memory import release_free_memory

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
ARRAYS_FILE = "arrays.json"
LOCK_FILE = ".lock"
KEEP_ENTRIES = 3
SHARED_DIR_NAME = "shared-arrays"  # under the directory `serve` makes for its workers

Built = Mapping[str, "np.ndarray | bytes"]


def shared_root(workers_dir: str | os.PathLike | None) -> Path | None:
    """Where the workers of one `serve` share derived arrays: a folder of its workers' directory
    (`ServiceSettings.reload_bus`), or None for a single process (nothing to share)."""
    return Path(workers_dir) / SHARED_DIR_NAME if workers_dir else None


def inputs_key(parts: Mapping[str, str]) -> str:
    """A cache key for derived arrays: the hash of `parts` (e.g. input file name -> sha256)."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SharedArrays:
    """The derived arrays of one model version (`key`), under `root` or, without one, in memory."""

    def __init__(self, root: str | os.PathLike | None, key: str):
        self.root = Path(root) if root is not None else None
        self.key = key

    @property
    def shared(self) -> bool:
        return self.root is not None

    def get(self, name: str, build: Callable[[], Built]) -> dict:
        """The arrays `build()` makes (`name -> ndarray | bytes`), built once per key and name.

        Shared: arrays come back as read-only memory maps (`np.ndarray`), byte strings as read-only
        `mmap.mmap` objects (sliced like bytes); in memory: whatever `build` returned.
        """
        if self.root is None:
            return dict(build())
        try:
            return self._get_shared(name, build)
        except OSError as error:  # a full or unwritable disk costs memory, never the model
            LOG.warning("cannot share %s through %s (%s): this worker keeps its own copy", name, self.root, error)
            return dict(build())

    def _get_shared(self, name: str, build: Callable[[], Built]) -> dict:
        assert self.root is not None  # get() keeps arrays in memory without a root
        entry_root = self.root / self.key
        entry_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = entry_root / name
        with _locked(entry_root / LOCK_FILE):
            if (entry / ARRAYS_FILE).exists():
                try:
                    return _open(entry)
                except (OSError, ValueError) as error:
                    LOG.error(
                        "shared arrays %s are not what %s records (%s): removed, building them again",
                        entry,
                        ARRAYS_FILE,
                        error,
                    )
                    shutil.rmtree(entry, ignore_errors=True)
            started = time.perf_counter()
            _write(entry, build())
            release_free_memory()  # the builder's temporaries: this worker keeps no more than the others
            LOG.info("built shared arrays %s in %.1fs", entry, time.perf_counter() - started)
            opened = _open(entry)
        self._evict()
        return opened

    def _evict(self) -> None:
        """Removes all but the `KEEP_ENTRIES` most recently written keys (skipping any in use)."""
        assert self.root is not None  # only _get_shared, which has a root, evicts
        keys = [p for p in self.root.iterdir() if p.is_dir() and p.name != self.key]
        keys.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in keys[KEEP_ENTRIES - 1 :]:
            with contextlib.suppress(OSError), _locked(old / LOCK_FILE, blocking=False):
                shutil.rmtree(old)
                LOG.info("removed shared arrays of an older model version: %s", old)


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(entry: Path, arrays: Built) -> None:
    """Writes `arrays` into a hidden staging directory, then renames it to `entry` (atomic)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.staging-", dir=entry.parent))
    try:
        files: dict[str, dict[str, object]] = {}
        record = {"format_version": FORMAT_VERSION, "files": files}
        for name, value in arrays.items():
            file_name = f"{name}.bin" if isinstance(value, (bytes, bytearray)) else f"{name}.npy"
            path = staging / file_name
            with open(path, "wb") as handle:
                if isinstance(value, (bytes, bytearray)):
                    handle.write(value)
                else:
                    np.save(handle, np.ascontiguousarray(value), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            files[file_name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        (staging / ARRAYS_FILE).write_text(json.dumps(record, indent=1))
        os.rename(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _open(entry: Path) -> dict:
    """The arrays of a written entry, memory-mapped, each file checked against `arrays.json`.

    Raises:
      ValueError: a file is missing, of another size or hash, or the record is not readable.
    """
    try:
        record = json.loads((entry / ARRAYS_FILE).read_text())
        files = record["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{ARRAYS_FILE} is unreadable: {error}") from None
    if record.get("format_version") != FORMAT_VERSION or not isinstance(files, dict):
        raise ValueError(f"{ARRAYS_FILE} has format {record.get('format_version')!r}, expected {FORMAT_VERSION}")
    opened = {}
    for file_name, expected in files.items():
        path = entry / file_name
        if Path(file_name).name != file_name or not path.is_file():
            raise ValueError(f"{file_name} is missing")
        if path.stat().st_size != expected.get("bytes") or sha256_file(path) != expected.get("sha256"):
            raise ValueError(f"{file_name} does not match its size or sha256")
        name, _, kind = file_name.rpartition(".")
        opened[name] = _map_bytes(path) if kind == "bin" else _map_array(path)
    return opened


def _map_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _map_bytes(path: Path):
    if path.stat().st_size == 0:
        return b""
    with open(path, "rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
