"""Files of the transform job through Beam's `FileSystems` (local paths and gs:// alike), and its
output directory: refusing to clobber, staging, moving into place, deleting.

Local outputs are staged in a hidden sibling owned by this process and moved into place with
`homefeed.atomic.move_into_place` (fsynced, then renamed); remote outputs are written in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from homefeed import atomic, lifetime
from homefeed.layout import transform_dir as layout


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(text.encode("utf-8"))


def read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode("utf-8")


def matching(pattern: str) -> list[str]:
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # Beam raises BeamIOError for "no match" on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def mkdirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        FileSystems.mkdirs(path)  # a no-op on object stores


def looks_like_transform_output(path: str) -> bool:
    return FileSystems.exists(join(path, layout.SUCCESS_MARKER)) or FileSystems.exists(join(path, layout.SUMMARY_FILE))


def prepare_output(output_dir: str, overwrite: bool) -> None:
    """Refuses to clobber a finished output (without `overwrite`) or a directory that is not ours."""
    if is_local(output_dir):
        if not os.path.exists(output_dir):
            return
        if not os.path.isdir(output_dir):
            raise ValueError(f"--out {output_dir} exists and is not a directory")
        if not os.listdir(output_dir):
            return
    elif not matching(join(output_dir, "**")):
        return
    if not looks_like_transform_output(output_dir):
        raise ValueError(f"--out {output_dir} is not empty and is not a transform output; choose another directory")
    finished = FileSystems.exists(join(output_dir, layout.SUCCESS_MARKER))
    if finished and not overwrite:
        raise ValueError(
            f"--out {output_dir} already holds a finished transform output; pass --overwrite to replace it"
        )


def staging_dir(output_dir: str) -> str:
    """Where this run writes: a hidden sibling owned by this process for local paths (moved into
    place at the end; those of killed runs are removed first), else `output_dir` itself."""
    if not is_local(output_dir):
        return output_dir
    target = Path(os.path.abspath(output_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    lifetime.remove_stale_dirs(target.parent, atomic.staging_prefix(target))
    return str(lifetime.owned_dir(target.parent, atomic.staging_prefix(target)))


def publish_local(staging: str, output_dir: str) -> None:
    """Moves the finished `staging` directory to `output_dir`, replacing an old one if present."""
    atomic.move_into_place(Path(staging), Path(os.path.abspath(output_dir)), replace=True)


def delete(path: str) -> None:
    """Removes a directory tree (local) or every object under a prefix (object stores)."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    paths = matching(join(path, "**"))
    if paths:
        FileSystems.delete(paths)
