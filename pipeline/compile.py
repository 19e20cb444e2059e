"""Compiling the pipeline to KFP IR YAML, loading it back, and typing `--param k=v` values.

The YAML is what a Kubeflow cluster runs (`candidates pipeline submit`) and what
`kfp.components.load_component_from_file` reads back (a compiled pipeline is a component).
"""

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

# KFP IR parameter types (pipeline_spec ParameterType names) -> what a `k=v` string becomes.
_BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def pipeline_parameters(pipeline_spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The root parameters of a compiled pipeline: name -> {"type": ..., "default": ...}.

    `pipeline_spec` is the parsed IR YAML (a dict).
    """
    definitions = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {
        name: {"type": spec.get("parameterType"), "default": spec.get("defaultValue")}
        for name, spec in definitions.items()
    }


def parse_param_assignments(assignments: Iterable[str], parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Turns `["epochs=5", "beam_args=[\"--x\"]"]` into typed values for the pipeline's parameters.

    Types come from the compiled pipeline (`pipeline_parameters`): integers, floats and booleans are
    parsed, lists and structs are JSON, strings are taken as they are.

    Raises:
      ValueError: naming the assignment that is malformed, names no parameter, or has a bad value.
    """
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--param {assignment!r}: expected NAME=VALUE")
        if name not in parameters:
            raise ValueError(
                f"--param {assignment!r}: the pipeline has no parameter {name!r}; it has: {', '.join(sorted(parameters))}"
            )
        kind = parameters[name]["type"]
        try:
            if kind == "NUMBER_INTEGER":
                value: Any = int(text)
            elif kind == "NUMBER_DOUBLE":
                value = float(text)
            elif kind == "BOOLEAN":
                if text.strip().lower() not in _BOOLEAN_WORDS:
                    raise ValueError("expected true or false")
                value = _BOOLEAN_WORDS[text.strip().lower()]
            elif kind == "LIST":
                value = json.loads(text)
                if not isinstance(value, list):
                    raise ValueError('expected a JSON list, e.g. ["--flag=1"]')
            elif kind == "STRUCT":
                value = json.loads(text)
                if not isinstance(value, dict):
                    raise ValueError("expected a JSON object")
            else:
                value = text
        except ValueError as error:
            raise ValueError(f"--param {assignment!r}: {name} is {kind}: {error}") from None
        values[name] = value
    return values


def compile_pipeline(
    output: str | os.PathLike,
    parameters: Mapping[str, Any] | None = None,
    pipeline_root: str | None = None,
) -> dict[str, Any]:
    """Compiles `pipeline.pipeline.candidates_pipeline` to IR YAML at `output`; returns the spec.

    Args:
      output: the YAML file to write (its directory is created).
      parameters: new defaults for pipeline parameters (checked against the pipeline's).
      pipeline_root: default root for the run's artifacts (`gs://bucket/path` or a local path);
        a run can still override it (`candidates pipeline submit --output-root`).

    Returns:
      The compiled pipeline spec as a dict, exactly as written.
    """
    import yaml
    from kfp import compiler

    from pipeline.pipeline import candidates_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    parameters = dict(parameters or {})
    known = set(candidates_pipeline.component_spec.inputs or {})
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; known: {sorted(known)}")
    tmp = output.with_name(f".{output.stem}.tmp.yaml")
    compiler.Compiler().compile(candidates_pipeline, str(tmp), pipeline_parameters=parameters or None)
    spec = yaml.safe_load(tmp.read_text())
    if pipeline_root:
        spec["defaultPipelineRoot"] = pipeline_root
        tmp.write_text(_header(tmp.read_text()) + yaml.safe_dump(spec, sort_keys=True))
    os.replace(tmp, output)
    LOG.info("compiled pipeline %r to %s", spec["pipelineInfo"]["name"], output)
    return spec


def _header(text: str) -> str:
    # Keep KFP's human-readable "# PIPELINE DEFINITION" comment block when rewriting the YAML.
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


# The checked-in compiled pipeline (tests/pipeline/test_golden.py); `make golden` rewrites it.
GOLDEN_FILE = Path(__file__).resolve().parents[1] / "tests" / "pipeline" / "golden" / "candidates_pipeline.yaml"
# What may differ between two compiles of the same code: the SDK that wrote it.
_VOLATILE_KEYS = ("sdkVersion",)


def normalised_yaml(spec: Mapping[str, Any]) -> str:
    """A compiled spec as stable text: keys sorted, the writing SDK's version left out."""
    import yaml

    stable = {key: value for key, value in spec.items() if key not in _VOLATILE_KEYS}
    return yaml.safe_dump(stable, sort_keys=True, width=120)


def write_golden(path: str | os.PathLike = GOLDEN_FILE) -> Path:
    """Compiles the pipeline with its defaults and writes `normalised_yaml` of it to `path`."""
    import tempfile

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="homefeed-golden-") as tmp:
        spec = compile_pipeline(Path(tmp) / "pipeline.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(normalised_yaml(spec))
    LOG.info("wrote the golden compiled pipeline to %s", path)
    return path


def load_pipeline(path: str | os.PathLike):
    """Loads a compiled pipeline YAML with KFP's own loader (returns a `kfp` YamlComponent).

    Raises:
      FileNotFoundError: `path` does not exist.
    """
    from kfp import components

    if not Path(path).is_file():
        raise FileNotFoundError(f"no compiled pipeline at {path}")
    return components.load_component_from_file(str(path))


if __name__ == "__main__":  # python -m pipeline.compile --golden [PATH]   (what `make golden` runs)
    import sys

    if sys.argv[1:2] != ["--golden"]:
        sys.exit("usage: python -m pipeline.compile --golden [PATH]   (rewrites the golden compiled pipeline)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(write_golden(*sys.argv[2:3]))
