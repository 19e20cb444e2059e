"""Flags generated from the typed configs: every field a flag, defaults only in the dataclass."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from homefeed.config import ExtractConfig, IndexConfig, TransformConfig
from homefeed.config_flags import add_config_flags, config_from_args, flag_name
from homefeed_cli import cli


def parser_for(cls, **options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls, "settings", **options)
    return parser


@pytest.mark.parametrize("cls", [TransformConfig, IndexConfig])
def test_no_flags_give_the_dataclass_defaults(cls):
    assert config_from_args(cls, parser_for(cls, skip=("beam_args",)).parse_args([])) == cls()


def test_every_field_is_a_flag_typed_from_its_annotation():
    parser = parser_for(TransformConfig, skip=("beam_args",))
    flags = {o for action in parser._actions for o in action.option_strings}
    assert {flag_name(f.name) for f in dataclasses.fields(TransformConfig) if f.name != "beam_args"} <= flags
    config = config_from_args(
        TransformConfig,
        parser.parse_args(["--history-length", "7", "--vocab-top-k", "none", "--runner", "FlinkRunner"]),
    )
    assert (config.history_length, config.vocab_top_k, config.runner) == (7, None, "FlinkRunner")
    with pytest.raises(SystemExit):
        parser.parse_args(["--history-length", "seven"])


def test_renamed_and_boolean_flags():
    parser = parser_for(IndexConfig, flags={"tune_search": "--tune", "ivf_nprobe": "--nprobe"})
    config = config_from_args(IndexConfig, parser.parse_args(["--no-tune", "--nprobe", "4", "--ivf-nlist", "8"]))
    assert (config.tune_search, config.ivf_nprobe, config.ivf_nlist) == (False, 4, 8)
    assert config_from_args(IndexConfig, parser.parse_args(["--tune"])).tune_search is True


def test_a_value_the_config_refuses_names_the_field():
    parser = parser_for(TransformConfig, skip=("beam_args",))
    with pytest.raises(ValueError, match="num_oov_buckets must be >= 1"):
        config_from_args(TransformConfig, parser.parse_args(["--num-oov-buckets", "0"]))


def test_the_transform_and_build_index_commands_use_the_dataclass_defaults():
    parser = cli.build_parser()
    transform = parser.parse_args(["transform", "--examples", "e", "--out", "o"])
    assert config_from_args(TransformConfig, transform, beam_args=[]) == TransformConfig()
    index = parser.parse_args(["build-index", "--model", "m", "--no-tune", "--sample-size", "20"])
    assert config_from_args(IndexConfig, index) == IndexConfig(tune_search=False, recall_sample_size=20)
    extract = parser.parse_args(["extract", "--out", "o", "--events", "e", "--articles", "a", "--max-clock-skew", "60"])
    assert config_from_args(ExtractConfig, extract) == ExtractConfig(max_clock_skew_s=60.0)
