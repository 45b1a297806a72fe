"""Typed configs: dataclasses filled from YAML and flags, strictly.

Resolution order everywhere: dataclass defaults < YAML file < command-line flags.
Unknown keys are errors (a typo in a 10-hour run's YAML must not be ignored), and the
help text of a setting lives once, in its field's metadata; the CLI reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from distill.errors import UserError


def option(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    flag: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its help text; `flag` renames its CLI option, `cli=False` hides it."""
    meta = {"help": help, "flag": flag, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


ASSETS = Path(__file__).parent / "assets"  # models and data shipped inside the package


def shipped(folder: Path) -> list[str]:
    """Names of the YAML files (recipes, profiles) shipped in a package folder."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def shipped_yaml(name_or_path: str, folder: Path, kind: str) -> Path:
    """A YAML file by path, else the one shipped in `folder` under that name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(
            f"unknown {kind} '{name_or_path}' (shipped: {', '.join(shipped(folder))}; "
            "or give a path to a YAML file)"
        )
    return path


def bundled(ref: str) -> str:
    """`assets/NAME` (a model shipped with the package, as profiles and recipes name them) as a
    path that works wherever the package is installed; anything else unchanged."""
    if not ref.startswith("assets/"):
        return ref
    path = ASSETS / ref.removeprefix("assets/")
    if not path.exists():
        raise UserError(f"{path}: the bundled model is missing (scripts/ can rebuild it)")
    return str(path)


# In a model folder while `distill train` / `distill rl` write its final weights: a kill then
# leaves weights half-overwritten, so the mark stays and readers refuse the folder.
INCOMPLETE_MODEL = ".distill-incomplete"


@contextlib.contextmanager
def writing_model(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Mark `folder` for the duration of its final save. The mark goes only when the save
    finished: an exception or a kill inside leaves it for the rerun that completes the save."""
    mark = folder / INCOMPLETE_MODEL
    if enabled:
        folder.mkdir(parents=True, exist_ok=True)
        mark.write_text("the final save of this model did not finish; rerun the command\n")
    yield
    if enabled:
        mark.unlink(missing_ok=True)


def check_model_ref(ref: str, flag: str = "--model") -> None:
    """A model to load is a local folder or a Hub id (`name` or `owner/name`); anything else
    fails here in one line, not deep in vLLM or transformers with a traceback. A folder whose
    final save a kill interrupted is refused too."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / INCOMPLETE_MODEL).exists():
            raise UserError(
                f"{flag} {ref}: a model whose final save did not finish (a killed `distill "
                "train` or `distill rl`); rerun that command with --resume to complete it"
            )
        return
    if path.exists():
        raise UserError(f"{flag} {ref}: is a file, not a model folder")
    if not ref.startswith((".", "/", "~")) and ref.count("/") <= 1:
        try:
            validate_repo_id(ref)
            return
        except HFValidationError:
            pass
    raise UserError(f"{flag} {ref}: no such model folder, and not a Hub id (owner/name)")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every problem into a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    import yaml  # 20 ms: for the commands that read a file, not for every --help

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of fields at the top level")
    return data


def from_dict(cls: type, data: Mapping[str, Any], source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown or ill-typed fields name themselves."""
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: '{prefix.rstrip('.') or cls.__name__}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = _did_you_mean(cls, str(key))
            hint = f" (did you mean '{prefix}{close}'?)" if close else ""
            raise UserError(f"{source}: unknown field '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], source, f"{prefix}{key}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise UserError(f"{source}: missing required field '{prefix}{missing[0]}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"{source}: {e}") from None


def _field_paths(cls: type, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every field of `cls`, nested dataclasses included, own fields first."""
    hints = typing.get_type_hints(cls)
    nested = []
    for f in dataclasses.fields(cls):
        yield f"{prefix}{f.name}"
        inner = [a for a in get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        if dataclasses.is_dataclass(inner[0]):
            nested.append((inner[0], f"{prefix}{f.name}."))
    for sub, sub_prefix in nested:
        yield from _field_paths(sub, sub_prefix)


def _did_you_mean(cls: type, key: str) -> str | None:
    """The field a typo meant, at any depth: `temprature` at the top of a profile means
    `sampling.temperature`, not the nearest top-level name (`chat_template`)."""
    by_name: dict[str, str] = {}
    for path in _field_paths(cls):
        by_name.setdefault(path.rsplit(".", 1)[-1], path)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_name), n=1)
    return by_name[close[0]] if close else None


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text",
              Path: "a path"}  # fmt: skip


def type_name(tp: Any) -> str:
    """A type as an error message says it to a user: `a number`, not `<class 'float'>`."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in get_args(tp) else "")
    if tp in TYPE_NAMES:
        return TYPE_NAMES[tp]
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, source: str, path: str) -> Any:
    origin = get_origin(tp)
    bad = UserError(f"{source}: field '{path}' must be {type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, source, path)
            except UserError as e:
                last = e
        raise last
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, source, prefix=f"{path}.")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = get_args(tp) or (Any,)
        return [_coerce(v, item, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        _, item = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, item, source, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise bad
    return value


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (Paths as strings), ready for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def override(obj: Any, overrides: Mapping[str, Any], source: str = "command line") -> Any:
    """Return a copy of dataclass `obj` with dotted-path overrides applied and re-validated."""
    if not overrides:
        return obj
    data = to_dict(obj)
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return from_dict(type(obj), data, source)


def load_recipe_file(
    cls: type, name_or_path: str, directory: Path, what: str,
    extra: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
) -> Any:  # fmt: skip
    """A shipped recipe (by name, from `directory`) or a YAML path, as `cls`; `extra` (a
    recipe-shaped mapping from --config) merges in, a mapping field key by key, then dotted
    `overrides` (flags)."""
    path = shipped_yaml(name_or_path, directory, what)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    recipe = from_dict(cls, data, str(path))
    if extra:
        merged = dataclasses.asdict(recipe)
        for key, value in extra.items():
            nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = {**merged[key], **value} if nested else value
        recipe = from_dict(cls, merged, "--config")
    return override(recipe, overrides or {})


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"data.dataset": x} -> {"data": {"dataset": x}}: flags by dotted path as a config mapping."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def dump_yaml(data: Any) -> str:
    """YAML as distill writes it (records, resolved configs): keys in their order, unicode kept."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def parse_assignments(items: list[str], source: str = "--set") -> dict[str, Any]:
    """`key.sub=value` strings -> {dotted key: YAML-typed value}."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"{source}: expected FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A scalar config field reachable by a dotted path: what a CLI flag sets."""

    path: str
    flag: str
    type: Any
    help: str


def leaves(cls: type, prefix: str = "") -> Iterator[Leaf]:
    """Every scalar field of `cls` (nested dataclasses flattened) that has a CLI flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp = hints[f.name]
        inner = [a for a in get_args(tp) if a is not type(None)]
        base = inner[0] if get_origin(tp) in (Union, types.UnionType) and len(inner) == 1 else tp
        if dataclasses.is_dataclass(base):
            yield from leaves(base, f"{prefix}{f.name}.")
        elif base in (int, float, str, bool, Path, list[str]) or get_origin(base) is Literal:
            flag = f.metadata.get("flag") or f.name.replace("_", "-")
            yield Leaf(f"{prefix}{f.name}", flag, base, f.metadata.get("help", ""))
