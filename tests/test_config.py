from dataclasses import dataclass, field
from typing import Literal

import pytest

from distill.config import from_dict, leaves, load_yaml, option, override, parse_assignments
from distill.errors import UserError
from distill.teachers.profile import TeacherProfile, load_profile, shipped_profiles


@dataclass
class Inner:
    size: int = option(1, help="a size")


@dataclass
class Outer:
    name: str = option(help="required name")
    mode: Literal["a", "b"] = option("a", help="mode")
    ratio: float = option(0.5, help="ratio")
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = option(default_factory=list, help="tags")


def test_from_dict_types_and_nesting():
    cfg = from_dict(Outer, {"name": "x", "ratio": 1, "inner": {"size": 3}, "tags": ["t"]}, "f.yaml")
    assert cfg.ratio == 1.0 and cfg.inner.size == 3 and cfg.tags == ["t"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "sise": 1}, "f.yaml: unknown field 'sise'"),
        (
            {"name": "x", "inner": {"sise": 1}},
            "unknown field 'inner.sise' (did you mean 'inner.size'?)",
        ),
        ({"name": "x", "mode": "c"}, "field 'mode' must be one of 'a', 'b', got 'c'"),
        ({"name": "x", "inner": {"size": "3"}}, "field 'inner.size' must be an integer, got '3'"),
        ({"name": "x", "ratio": True}, "field 'ratio' must be a number, got True"),
        ({}, "missing required field 'name'"),
    ],
)
def test_from_dict_errors_name_the_field(data, message):
    with pytest.raises(UserError, match=None) as e:
        from_dict(Outer, data, "f.yaml")
    assert message in str(e.value)


def test_override_and_assignments():
    cfg = from_dict(Outer, {"name": "x"}, "f")
    new = override(cfg, parse_assignments(["inner.size=8", "mode=b", "tags=[u, v]"]))
    assert (new.inner.size, new.mode, new.tags) == (8, "b", ["u", "v"])
    assert cfg.inner.size == 1  # the original is untouched
    with pytest.raises(UserError, match=r"unknown field 'inner\.nope'"):
        override(cfg, {"inner.nope": 1})
    with pytest.raises(UserError, match="expected FIELD=VALUE"):
        parse_assignments(["novalue"])


def test_leaves_flatten_nested_fields():
    flags = {leaf.flag: leaf.path for leaf in leaves(Outer)}
    assert flags == {
        "name": "name",
        "mode": "mode",
        "ratio": "ratio",
        "size": "inner.size",
        "tags": "tags",
    }


def test_load_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: invalid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(UserError, match="mapping"):
        load_yaml(listy)


def test_shipped_profiles_load_with_r1_defaults():
    names = shipped_profiles()
    for required in (
        "deepseek-r1",
        "qwq-32b",
        "r1-distill-qwen-32b",
        "r1-distill-qwen-1.5b",
        "tiny",
    ):
        assert required in names
    for name in names:
        p = load_profile(name)
        assert isinstance(p, TeacherProfile) and p.name == name
        assert p.sampling.temperature == 0.6 and p.sampling.top_p == 0.95
        assert p.prompts["math"].system is None and p.prompts["math"].prefill == "<think>\n"
        assert (
            "Please reason step by step, and put your final answer within \\boxed{}."
            in p.prompts["math"].user
        )
    r1 = load_profile("deepseek-r1")
    assert (r1.engine.tensor_parallel_size, r1.engine.pipeline_parallel_size) == (8, 2)
    assert r1.engine.distributed_executor_backend == "ray" and r1.sampling.max_tokens == 32768


def test_profile_overrides_and_errors(tmp_path):
    p = load_profile(
        "deepseek-r1",
        {"model": "/ckpt/local", "sampling.temperature": 0.7, "engine.tensor_parallel_size": 4},
    )
    assert (p.model, p.sampling.temperature, p.engine.tensor_parallel_size) == (
        "/ckpt/local",
        0.7,
        4,
    )
    with pytest.raises(UserError, match="unknown teacher profile 'nope'"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\nsampling:\n  temprature: 0.6\n")
    with pytest.raises(
        UserError,
        match=r"bad.yaml: unknown field 'sampling.temprature' \(did you mean 'sampling.temperature'\?\)",
    ):
        load_profile(str(bad))
    custom = tmp_path / "custom.yaml"
    custom.write_text("model: m\nprompts:\n  math:\n    user: 'Q: {problem}'\n")
    p = load_profile(str(custom))
    assert p.prompts["math"].user == "Q: {problem}" and p.prompts["math"].prefill == "<think>\n"
    assert "code" in p.prompts
    with pytest.raises(UserError, match="must contain"):
        load_profile(str(custom), {"prompts.math.user": "no placeholder"})
