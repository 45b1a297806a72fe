"""Typer options generated from config dataclasses, so help text lives once (in the field).

`@config_flags(run=GenerateConfig, teacher=TeacherProfile)` adds one `--flag` per scalar
field; the command receives `flags={"run": {dotted.path: value}, "teacher": {...}}` holding
only the flags the user gave, ready for `config.override`.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin

import typer
import typer.core

from distill.config import Leaf, leaves
from distill.errors import UserError


def _panel(group: str, leaf: Leaf) -> str:
    """Help panels by what a flag is about: the section of the config it sets."""
    head, _, rest = leaf.path.partition(".")
    return (head if rest else group).replace("_", " ").capitalize()


def _option(leaf: Leaf, panel: str) -> tuple[Any, Any]:
    help_text = leaf.help
    tp = leaf.type
    if tp == list[str]:
        help_text += " (comma-separated)"
        tp = str
    if get_origin(tp) is Literal:
        help_text += " [" + "|".join(str(a) for a in get_args(tp)) + "]"
        tp = str
    if tp is bool:
        # `--no-x` is a hidden option of its own: shown beside `--x`, it would take a column
        # of its own and squeeze the names at 80 columns
        help_text += f" (--no-{leaf.flag}: off)"
        return Optional[bool], typer.Option(  # noqa: UP045
            None, f"--{leaf.flag}", help=help_text, show_default=False, rich_help_panel=panel
        )
    return Optional[tp], typer.Option(  # noqa: UP045
        None, f"--{leaf.flag}", help=help_text, show_default=False, rich_help_panel=panel
    )


def _negation(leaf: Leaf) -> tuple[Any, Any]:
    return Optional[bool], typer.Option(None, f"--no-{leaf.flag}", hidden=True)  # noqa: UP045


def config_flags(**groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)  # resolve string annotations
        params = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.name != "flags"
        ]
        taken = {p.name for p in params}
        mapping: dict[str, tuple[str, Leaf]] = {}
        flags_seen: dict[str, str] = {}
        for group, cls in groups.items():
            for leaf in leaves(cls):
                if leaf.flag in flags_seen:
                    raise RuntimeError(
                        f"--{leaf.flag} defined twice ({flags_seen[leaf.flag]}, {leaf.path})"
                    )
                flags_seen[leaf.flag] = leaf.path
                name = f"{group}__{leaf.path.replace('.', '__')}"
                assert name not in taken
                annotation, default = _option(leaf, _panel(group, leaf))
                params.append(
                    inspect.Parameter(
                        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
                    )
                )
                mapping[name] = (group, leaf)
                if leaf.type is bool:
                    annotation, default = _negation(leaf)
                    params.append(
                        inspect.Parameter(
                            f"{name}__no", inspect.Parameter.KEYWORD_ONLY, default=default,
                            annotation=annotation,
                        )
                    )  # fmt: skip

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            flags: dict[str, dict[str, Any]] = {g: {} for g in groups}
            for name, (group, leaf) in mapping.items():
                value = kwargs.pop(name)
                if leaf.type is bool and kwargs.pop(f"{name}__no"):
                    if value:
                        raise UserError(f"--{leaf.flag} and --no-{leaf.flag} together")
                    value = False
                if value is None:
                    continue
                if leaf.type == list[str]:
                    value = [v.strip() for v in value.split(",") if v.strip()]
                flags[group][leaf.path] = str(value) if isinstance(value, Path) else value
            return fn(flags=flags, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return wrapper

    return decorate


class PanelCommand(typer.core.TyperCommand):
    """Help as plain text with one section per panel (Run, Data, Teacher, Engine, ...).

    Rich's boxed help costs a fifth of a second to import and render on every `--help`, more
    than the command itself; plain sections keep the grouping, wrap at the terminal's width
    and never cut an option's name."""

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = "Arguments"
            else:
                name = getattr(param, "rich_help_panel", None) or "Options"
            sections.setdefault(name, []).append(record)
        for name in ("Arguments", "Options", *sections):
            if name in sections:
                with formatter.section(name):
                    formatter.write_dl(sections.pop(name))


def command_app(**kwargs: Any) -> typer.Typer:
    """A Typer for a module of commands: plain help (see PanelCommand)."""
    return typer.Typer(rich_markup_mode=None, **kwargs)
