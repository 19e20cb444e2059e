"""`candidates train` / `candidates evaluate` argument handling (no training here)."""

from __future__ import annotations

import pytest

from homefeed.config import EvaluateConfig, TrainConfig
from homefeed.config_flags import config_from_args
from homefeed_cli import cli


def _parse(argv: list[str]):
    return cli.build_parser().parse_args(argv)


def test_every_config_field_is_a_flag_and_overrides_its_default():
    args = _parse(
        [
            "train",
            "--transformed",
            "t",
            "--out",
            "o",
            "--embedding-dim",
            "32",
            "--tower-units",
            "64",
            "32",
            "--no-l2-normalize",
            "--temperature",
            "0.2",
            "--num-sampled-negatives",
            "100",
            "--seed",
            "7",
        ]
    )
    config = config_from_args(TrainConfig, args)
    assert config == TrainConfig(
        embedding_dim=32, tower_units=(64, 32), l2_normalize=False, temperature=0.2, num_sampled_negatives=100, seed=7
    )
    defaults = config_from_args(TrainConfig, _parse(["train", "--transformed", "t", "--out", "o"]))
    assert defaults == TrainConfig()


def test_evaluate_flags_build_the_evaluate_config():
    args = _parse(["evaluate", "--model", "m", "--examples", "e", "--ks", "5", "20", "--max-users", "100"])
    assert config_from_args(EvaluateConfig, args) == EvaluateConfig(ks=(5, 20), max_users=100)


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["train", "--transformed", str(tmp_path / "absent"), "--out", str(tmp_path / "m")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--transformed", str(tmp_path), "--out", str(tmp_path / "m"), "--dropout", "1.5"]) == 2
    assert "dropout must be in [0, 1)" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(tmp_path), "--examples", str(tmp_path)]) == 2
    assert "not a finished model directory" in capsys.readouterr().err


def test_help_explains_the_commands(capsys):
    for command in ("train", "evaluate"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "example:" in out and "default:" in out
