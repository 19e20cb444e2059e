"""The compiled pipeline is exactly the checked-in golden file (tests/pipeline/golden/).

A change to a component, a parameter or the wiring shows up here as a diff to review; when it is
meant, regenerate the file with `make golden` and commit it with the change.
"""

from __future__ import annotations

import difflib

import yaml

from pipeline import compile as compiling


def test_compiled_pipeline_matches_the_golden_file(tmp_path):
    spec = compiling.compile_pipeline(tmp_path / "pipeline.yaml")
    actual = compiling.normalised_yaml(spec)
    expected = compiling.GOLDEN_FILE.read_text()
    if actual != expected:
        diff = "".join(
            list(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "compiled"))[:80]
        )
        raise AssertionError(
            f"the compiled pipeline differs from {compiling.GOLDEN_FILE}; if meant, run `make golden`:\n{diff}"
        )


def test_normalising_drops_only_the_sdk_version():
    spec = {"sdkVersion": "kfp-9.9.9", "pipelineInfo": {"name": "p"}, "components": {"b": 1, "a": 2}}
    text = compiling.normalised_yaml(spec)
    assert "sdkVersion" not in text and yaml.safe_load(text) == {
        "pipelineInfo": {"name": "p"},
        "components": {"b": 1, "a": 2},
    }
    assert compiling.normalised_yaml(dict(reversed(list(spec.items())))) == text  # key order does not matter
