"""The compiled pipeline: KFP's loader reads it back; components, parameters and wiring are right."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from homefeed.config import ExtractConfig, PublishConfig, TrainConfig
from homefeed_cli import cli
from pipeline import compile as compiling

STAGES = ["extract", "transform", "train", "evaluate", "transform-2", "train-final", "build-index", "publish"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(path, parsed YAML, what kfp.components.load_component_from_file returns)."""
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    spec = compiling.compile_pipeline(path)
    return path, spec, compiling.load_pipeline(path)


def test_kfp_loader_reads_the_pipeline_back(compiled):
    path, spec, loaded = compiled
    assert loaded.name == "homefeed-candidates"
    assert loaded.pipeline_spec.pipeline_info.name == "homefeed-candidates"
    assert set(loaded.pipeline_spec.root.dag.tasks) == set(STAGES)
    # What was written is what compile_pipeline returned.
    assert yaml.safe_load(path.read_text()) == spec


def test_each_stage_has_its_own_component_and_typed_artifacts(compiled):
    _, spec, loaded = compiled
    tasks = spec["root"]["dag"]["tasks"]
    components = spec["components"]
    assert {tasks[t]["componentRef"]["name"] for t in STAGES} == {f"comp-{t}" for t in STAGES}

    def artifacts(component: str, side: str) -> dict[str, str]:
        definitions = components[f"comp-{component}"].get(f"{side}Definitions", {}).get("artifacts", {})
        return {name: value["artifactType"]["schemaTitle"] for name, value in definitions.items()}

    assert artifacts("extract", "output") == {"examples": "system.Dataset", "summary": "system.Metrics"}
    assert artifacts("transform", "input") == {"examples": "system.Dataset"}
    assert artifacts("transform", "output")["transformed"] == "system.Dataset"
    assert artifacts("train", "input") == {"transformed": "system.Dataset"}
    assert artifacts("train", "output") == {"model": "system.Model", "training_metrics": "system.Metrics"}
    assert artifacts("evaluate", "output") == {
        "evaluation": "system.Artifact",
        "metrics": "system.Metrics",
        "recall_plot": "system.HTML",
    }
    assert artifacts("train-final", "input") == {"transformed": "system.Dataset", "held_out": "system.Model"}
    assert artifacts("build-index", "input") == {"model": "system.Model", "examples": "system.Dataset"}
    assert artifacts("publish", "input") == {
        "model": "system.Model",
        "evaluation": "system.Artifact",
        "index": "system.Artifact",
        "examples": "system.Dataset",
    }
    assert artifacts("publish", "output") == {"decision": "system.Metrics", "report": "system.Markdown"}
    publish_params = components["comp-publish"]["outputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in publish_params.items()} == {
        "published": "BOOLEAN",
        "version": "STRING",
        "reason": "STRING",
    }


def test_dependencies_follow_the_data(compiled):
    _, _, loaded = compiled
    tasks = loaded.pipeline_spec.root.dag.tasks
    depends = {name: set(task.dependent_tasks) for name, task in tasks.items()}
    assert depends == {
        "extract": set(),
        "transform": {"extract"},
        "train": {"transform"},
        "evaluate": {"train", "extract"},
        "transform-2": {"extract"},
        "train-final": {"transform-2", "train"},
        "build-index": {"train-final", "extract"},
        "publish": {"train-final", "evaluate", "build-index", "extract"},
    }
    publish_inputs = tasks["publish"].inputs.artifacts
    assert publish_inputs["model"].task_output_artifact.producer_task == "train-final"
    assert publish_inputs["index"].task_output_artifact.producer_task == "build-index"
    assert publish_inputs["evaluation"].task_output_artifact.producer_task == "evaluate"
    assert publish_inputs["examples"].task_output_artifact.producer_task == "extract"


def test_parameters_and_defaults_come_from_the_typed_configs(compiled):
    _, spec, _ = compiled
    params = compiling.pipeline_parameters(spec)
    expected_types = {
        "image": "STRING",
        "bq_project": "STRING",
        "bq_dataset": "STRING",
        "events_table": "STRING",
        "articles_table": "STRING",
        "as_of": "STRING",
        "history_length": "NUMBER_INTEGER",
        "beam_runner": "STRING",
        "beam_args": "LIST",
        "embedding_dim": "NUMBER_INTEGER",
        "learning_rate": "NUMBER_DOUBLE",
        "epochs": "NUMBER_INTEGER",
        "index_type": "STRING",
        "min_recall_at_200": "NUMBER_DOUBLE",
        "max_regression": "NUMBER_DOUBLE",
        "publish_root": "STRING",
    }
    for name, kind in expected_types.items():
        assert params[name]["type"] == kind, name
    assert params["bq_dataset"]["default"] == ExtractConfig().dataset
    assert params["history_length"]["default"] == ExtractConfig().history_length
    assert params["epochs"]["default"] == TrainConfig().epochs
    assert params["learning_rate"]["default"] == pytest.approx(TrainConfig().learning_rate)
    assert params["min_recall_at_200"]["default"] == pytest.approx(PublishConfig().min_recall_at_200)
    assert params["max_regression"]["default"] == pytest.approx(PublishConfig().max_regression)
    assert params["beam_runner"]["default"] == "DirectRunner"
    assert params["image"]["default"].startswith("homefeed-candidates:")
    # Every TrainConfig knob a user tunes per run is a parameter.
    for name in ("embedding_dim", "output_dim", "learning_rate", "batch_size", "epochs", "temperature", "seed"):
        assert name in params and name in {f.name for f in dataclasses.fields(TrainConfig)}


def test_every_task_runs_in_the_image_parameter_without_installing_anything(compiled):
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(STAGES)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{name} would pip-install at start-up"
        assert "kfp.dsl.executor_main" in command


def test_extract_and_publish_are_never_cached(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("extract", "publish"):
        assert not tasks[name].get("cachingOptions", {}).get("enableCache"), name
    assert tasks["train"]["cachingOptions"]["enableCache"] is True


def test_parameter_defaults_and_output_root_can_be_set_at_compile_time(tmp_path):
    path = tmp_path / "nightly.yaml"
    spec = compiling.compile_pipeline(path, {"epochs": 7, "beam_runner": "DataflowRunner"}, pipeline_root="gs://b/root")
    loaded = compiling.load_pipeline(path)
    assert loaded.pipeline_spec.default_pipeline_root == "gs://b/root"
    params = compiling.pipeline_parameters(spec)
    assert params["epochs"]["default"] == 7
    assert params["beam_runner"]["default"] == "DataflowRunner"
    assert path.read_text().startswith("# PIPELINE DEFINITION")


def test_unknown_parameter_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown pipeline parameter"):
        compiling.compile_pipeline(tmp_path / "p.yaml", {"epoch": 3})
    assert not (tmp_path / "p.yaml").exists()


def test_param_assignments_are_typed():
    params = {
        "epochs": {"type": "NUMBER_INTEGER"},
        "learning_rate": {"type": "NUMBER_DOUBLE"},
        "beam_args": {"type": "LIST"},
        "as_of": {"type": "STRING"},
    }
    values = compiling.parse_param_assignments(
        ["epochs=3", "learning_rate=1e-3", 'beam_args=["--a=1", "--b"]', "as_of=2026-05-01T00:00:00Z"], params
    )
    assert values == {
        "epochs": 3,
        "learning_rate": 0.001,
        "beam_args": ["--a=1", "--b"],
        "as_of": "2026-05-01T00:00:00Z",
    }


def test_cli_compile_writes_a_loadable_file(tmp_path, capsys):
    out = tmp_path / "out" / "pipeline.yaml"
    status = cli.main(["pipeline", "compile", "--output", str(out), "--param", "epochs=4"])
    assert status == 0
    assert "8 tasks" in capsys.readouterr().out
    loaded = compiling.load_pipeline(out)
    assert loaded.pipeline_spec.root.input_definitions.parameters["epochs"].default_value.number_value == 4


def test_the_published_model_is_the_final_fit_and_the_figures_the_held_out_models(compiled):
    """evaluate reads the held-out model (train split); build-index and publish read the model
    trained on every view up to as_of, on a transform analysed over every split."""
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]

    def source(task: str, name: str) -> str:
        return tasks[task]["inputs"]["artifacts"][name]["taskOutputArtifact"]["producerTask"]

    assert source("evaluate", "model") == "train"
    assert source("train-final", "held_out") == "train"
    assert source("train-final", "transformed") == "transform-2"
    assert source("build-index", "model") == source("publish", "model") == "train-final"
    assert source("publish", "evaluation") == "evaluate"
    analysis = {t: tasks[t]["inputs"]["parameters"].get("analyze_splits") for t in ("transform", "transform-2")}
    assert analysis["transform-2"] == {"runtimeValue": {"constant": "all"}}
    assert analysis["transform"] in (None, {"runtimeValue": {"constant": "train"}})
