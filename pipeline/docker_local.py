"""Running the pipeline through `kfp.local` with every task in a container of the pipeline image.

`run_local(..., image=IMAGE)` uses these: each task runs as `docker run IMAGE ...` (kfp.local's
`DockerRunner`), exactly the command a cluster's pod runs, so the image itself is tested: its
installed packages, system libraries and entry points, not this machine's Python.

Two things kfp.local does not do on its own:
  * it runs the image named in the compiled spec as written, and the pipeline's `image`
    parameter is a placeholder there that only a cluster resolves: `pipeline_with_image()` loads
    the compiled pipeline back with every task's image set;
  * it mounts only the pipeline root: `docker_runner()` also mounts the publish root (which holds
    the pipeline root) and the input files' folders (read-only), each at its own path, and runs
    the containers as this process's user so that what they write belongs to the caller.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

# How `task.set_container_image(image)` with the pipeline parameter `image` compiles.
IMAGE_PLACEHOLDER = "{{$.inputs.parameters['pipelinechannel--image']}}"


def pipeline_with_image(image: str):
    """The candidates pipeline with every task's image set to `image` (a `YamlComponent`).

    Compiled to YAML and loaded back, as a cluster receives it; kfp.local runs it like the Python
    pipeline function (same parameters, same outputs).

    Raises:
      ValueError: `image` is empty, or the compiled pipeline has no image placeholder (the pipeline
        does not take its image from the `image` parameter).
    """
    from kfp import compiler, components

    from pipeline.pipeline import candidates_pipeline

    if not image or not image.strip():
        raise ValueError("image: empty; name the pipeline image, e.g. homefeed-candidates:0.1.0")
    import yaml

    with tempfile.TemporaryDirectory(prefix="homefeed-pipeline-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(candidates_pipeline, str(path))
        documents = list(yaml.safe_load_all(path.read_text()))
    containers = [
        executor["container"]
        for executor in documents[0]["deploymentSpec"]["executors"].values()
        if executor.get("container", {}).get("image") == IMAGE_PLACEHOLDER
    ]
    if not containers:
        raise ValueError(f"the compiled pipeline has no task image {IMAGE_PLACEHOLDER} to set")
    for container in containers:
        container["image"] = image.strip()
    return components.load_component_from_text(yaml.safe_dump_all(documents, sort_keys=False))


def docker_runner(writable: Iterable[os.PathLike | str], readable: Iterable[os.PathLike | str] = ()):
    """A `kfp.local.DockerRunner` that mounts these directories at their own paths.

    Args:
      writable: directories the tasks write (the publish root); created if missing.
      readable: directories the tasks only read (the input files' folders), mounted read-only.

    The containers run as this process's uid:gid, so files written into the mounts are the
    caller's; the image's own user (non-root) is what a cluster runs. Each task runs the command
    KFP gives it, as in a pod, not the image's `candidates` entrypoint.
    """
    from docker.types import Mount
    from kfp import local

    mounts, seen = [], set()
    for path, read_only in [*((p, False) for p in writable), *((p, True) for p in readable)]:
        path = Path(path).resolve()
        if path in seen:
            continue
        seen.add(path)
        if not read_only:
            path.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(target=str(path), source=str(path), type="bind", read_only=read_only))
    # A cluster's pod command replaces the image's ENTRYPOINT (`candidates`); docker-py's `command`
    # only replaces CMD, so the entrypoint is set to a pass-through here.
    return local.DockerRunner(mounts=mounts, user=f"{os.getuid()}:{os.getgid()}", entrypoint=["/usr/bin/env"])
