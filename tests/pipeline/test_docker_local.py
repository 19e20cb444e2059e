"""pipeline/docker_local.py: the pipeline as kfp.local's DockerRunner runs it (no daemon needed here;
tests/docker runs it for real in the image)."""

from __future__ import annotations

import os

import pytest
from kfp import local

from pipeline.docker_local import IMAGE_PLACEHOLDER, docker_runner, pipeline_with_image
from pipeline.pipeline import candidates_pipeline


def _executor_images(component) -> dict[str, str]:
    executors = component.pipeline_spec.deployment_spec["executors"]
    return {name: executors[name]["container"]["image"] for name in executors}


def test_every_task_gets_the_image_and_the_parameters_stay():
    pinned = pipeline_with_image("registry.example.com/homefeed-candidates:1.2.3")
    images = _executor_images(pinned)
    assert set(images) == set(_executor_images(candidates_pipeline))
    assert set(images.values()) == {"registry.example.com/homefeed-candidates:1.2.3"}
    # The original pipeline still takes its image from the parameter.
    assert set(_executor_images(candidates_pipeline).values()) == {IMAGE_PLACEHOLDER}
    assert set(pinned.component_spec.inputs) == set(candidates_pipeline.component_spec.inputs)


def test_an_empty_image_is_refused():
    with pytest.raises(ValueError, match="image: empty"):
        pipeline_with_image("  ")


def test_runner_mounts_the_publish_root_and_inputs_at_their_paths(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    runner = docker_runner(writable=[tmp_path / "work"], readable=[inputs, inputs])
    assert isinstance(runner, local.DockerRunner)
    args = runner.container_run_args
    mounts = {m["Target"]: m for m in args["mounts"]}
    assert set(mounts) == {str((tmp_path / "work").resolve()), str(inputs.resolve())}
    assert all(m["Source"] == target for target, m in mounts.items())
    assert (
        mounts[str(inputs.resolve())]["ReadOnly"] is True and not mounts[str((tmp_path / "work").resolve())]["ReadOnly"]
    )
    assert (tmp_path / "work").is_dir()
    assert args["user"] == f"{os.getuid()}:{os.getgid()}"
    assert args["entrypoint"] == ["/usr/bin/env"]  # the task's command, not the image's `candidates`
