"""Command-line flags generated from a typed config dataclass: the one way every stage does it.

`add_config_flags(parser, TransformConfig, ...)` adds one flag per field (`history_length` ->
`--history-length`), typed from the annotation, with the dataclass default shown in the help;
`config_from_args(TransformConfig, args)` builds the config from the flags the user gave, so a
default lives only in the dataclass (homefeed/config.py) and the CLI cannot drift from it.

Help text comes from the field's `metadata["help"]`, else from `helps`; a stage may keep an
established flag name (`flags`), skip fields it sets otherwise (`skip`) or parse a field its own
way (`types`). Flags the user did not give are absent from the namespace (argparse.SUPPRESS), so
an explicit value equal to None is still told apart from "not given".
"""

from __future__ import annotations

import argparse
import dataclasses
import types as pytypes
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from homefeed import config as config_lib

_NONE_WORDS = ("none", "")


def flag_name(field: str) -> str:
    """`embedding_dim` -> `--embedding-dim`."""
    return "--" + field.replace("_", "-")


def _optional(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    *,
    helps: Mapping[str, str] | None = None,
    flags: Mapping[str, str | tuple[str, ...]] | None = None,
    skip: Iterable[str] = (),
    types: Mapping[str, Callable[[str], Any]] | None = None,
) -> argparse._ArgumentGroup:
    """One flag per field of dataclass `cls` (but `skip`), in an argument group named `title`.

    Args:
      parser: the (sub-command) parser.
      cls: a config dataclass whose fields all have defaults.
      title: the argument group's title in --help.
      helps: field -> help text, for fields without `metadata["help"]`.
      flags: field -> flag name(s) to use instead of `--field-name` (established spellings).
      skip: fields that get no flag (the command sets them another way).
      types: field -> parser of the flag's text, instead of the annotation's type.

    Returns:
      the argument group (a command may add related flags to it).
    """
    helps, flags, types = dict(helps or {}), dict(flags or {}), dict(types or {})
    skipped = set(skip)
    group = parser.add_argument_group(title, f"defaults from homefeed.config.{cls.__name__}")
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skipped:
            continue
        kind = hints[field.name]
        default = getattr(defaults, field.name)
        shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        text = field.metadata.get("help") or helps.get(field.name) or field.name.replace("_", " ")
        help_text = f"{text} (default: {shown})".replace("%", "%%")
        names = flags.get(field.name, flag_name(field.name))
        names = (names,) if isinstance(names, str) else tuple(names)
        common: dict[str, Any] = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
            continue
        args = typing.get_args(kind)
        origin = typing.get_origin(kind)
        if origin in (tuple, list):  # tuple[int, ...], list[str]
            group.add_argument(
                *names, type=types.get(field.name, args[0]), nargs="*", metavar=args[0].__name__.upper(), **common
            )
        elif origin in (typing.Union, pytypes.UnionType):  # e.g. int | None: "none" gives None
            inner = next(a for a in args if a is not type(None))
            group.add_argument(
                *names, type=types.get(field.name, _optional(inner)), metavar=inner.__name__.upper(), **common
            )
        else:
            group.add_argument(*names, type=types.get(field.name, kind), metavar=kind.__name__.upper(), **common)
    return group


def given_config_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` the user gave on the command line (absent ones are not in `args`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """`cls` with its defaults overridden by the flags given, then by `overrides`.

    Raises:
      ValueError: a value the config refuses (its `__post_init__` names the field).
    """
    return config_lib.from_dict(cls, {**given_config_values(cls, args), **overrides})
