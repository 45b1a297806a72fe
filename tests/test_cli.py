"""The command line as a user meets it: instant help, one-line errors with exit code 2."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_jsonl

HEAVY = ("torch", "vllm", "transformers", "trl", "datasets", "numpy", "pyarrow")


def distill(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_help_is_instant_and_imports_nothing_heavy():
    code = (
        "import sys, time; t = time.perf_counter(); from distill.cli import app;"
        "import typer.testing as tt; r = tt.CliRunner().invoke(app, ['generate', '--help']);"
        "r = tt.CliRunner().invoke(app, ['filter', '--help']);"
        "assert r.exit_code == 0, r.output; dt = time.perf_counter() - t;"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; print(dt, heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert out[1].strip() == "[]", f"heavy imports at help time: {out[1]}"
    best = max(_timed(["--help"]), _timed(["generate", "--help"]), _timed(["filter", "--help"]))
    assert best < 0.5, f"distill --help took {best:.2f}s"


def test_help_lists_each_command_with_its_own_summary():
    """`distill --help` lists commands without importing them: each listed summary is the first
    line of the loaded command's docstring."""
    from distill.cli import COMMANDS, load_command

    for name, (_, summary) in COMMANDS.items():
        cmd = load_command(name)
        assert cmd.name == name
        assert (cmd.help or "").strip().splitlines()[0] == summary, name


def _timed(args: list[str]) -> float:
    """Best of 3 starts, as a user's machine runs them: with Python's bytecode cache (a test
    harness's PYTHONDONTWRITEBYTECODE would make every start recompile every module)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "distill.cli", *args], capture_output=True, check=True, env=env
        )
        times.append(time.perf_counter() - t)
    return min(times)


def test_generate_help_reuses_field_help():
    r = distill("generate", "--help")
    assert r.returncode == 0
    for flag in (
        "--dataset",
        "--problem-column",
        "--samples",
        "--shard",
        "--temperature",
        "--max-tokens",
        "--tensor-parallel-size",
        "--model",
        "--gpu-memory-utilization",
        "--prefix-caching",
    ):
        assert (
            flag in r.stdout
            or flag.replace("--prefix-caching", "--enable-prefix-caching") in r.stdout
        )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "d.jsonl", [{"problem": "1+1?", "answer": "2"}])


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t, d: ["--dataset", str(t / "missing.jsonl")], "missing.jsonl: no such file"),
        (
            lambda t, d: ["--dataset", str(d), "--problem-column", "nope"],
            "no column 'nope' for the problem",
        ),
        (lambda t, d: ["--dataset", str(write_jsonl(t / "e.jsonl", []))], "the dataset is empty"),
        (
            lambda t, d: ["--dataset", str(d), "--teacher", "no-such-teacher"],
            "unknown teacher profile 'no-such-teacher'",
        ),
        (
            lambda t, d: [
                "--dataset",
                str(d),
                "--teacher",
                str(_yaml(t, "model: m\nengine:\n  tensor_paralel_size: 2\n")),
            ],
            "unknown field 'engine.tensor_paralel_size' (did you mean 'engine.tensor_parallel_size'?)",
        ),
        (
            lambda t, d: [
                "--dataset",
                str(d),
                "--teacher",
                str(_yaml(t, "model: m\nsampling:\n  top_p: 2\n")),
            ],
            "top_p must be in (0, 1]",
        ),
        (lambda t, d: ["--dataset", str(d), "--shard", "3/3"], "--shard: expected I/N"),
        (lambda t, d: ["--dataset", str(d), "--samples", "0"], "samples must be >= 1"),
        (
            lambda t, d: ["--dataset", str(d), "--set", "sampling.temperature"],
            "expected FIELD=VALUE",
        ),
        (
            lambda t, d: [
                "--dataset",
                str(d),
                "--config",
                str(_yaml(t, "output: x\nsampels: 2\n")),
            ],
            "unknown field 'sampels'",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, data, make_args, message):
    out = tmp_path / "out"
    r = distill("generate", *make_args(tmp_path, data), "--output", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--max-digits", "7"], "--max-digits must be between 2 and 5"),
        (["--ops", "+/"], "--ops takes the characters"),
        (["--student-steps", "0"], "--student-steps must be at least 1"),
    ],
)
def test_demo_refuses_impossible_sizes_before_writing(tmp_path, flags, message):
    out = tmp_path / "demo"
    r = distill("demo", *flags, "--output", str(out))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


def _yaml(tmp: Path, text: str) -> Path:
    path = tmp / f"p{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


def test_output_is_required(tmp_path, data):
    r = distill("generate", "--dataset", str(data))
    assert r.returncode == 2 and "--output is required" in r.stderr


def test_teachers_lists_profiles():
    r = distill("teachers")
    assert r.returncode == 0 and "deepseek-r1" in r.stdout and "deepseek-ai/DeepSeek-R1" in r.stdout
    r = distill("teachers", "deepseek-r1")
    assert "pipeline_parallel_size: 2" in r.stdout


def test_every_help_fits_80_columns_without_truncation():
    """Option names and help stay readable in an 80-column terminal: rich marks what it cuts
    with an ellipsis."""
    from typer.main import get_command

    from distill.cli import app

    commands = sorted(get_command(app).commands)
    assert {"generate", "filter", "train", "eval"} <= set(commands)
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    for name in commands:
        r = subprocess.run([sys.executable, "-m", "distill.cli", name, "--help"],
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert r.returncode == 0, (name, r.stderr)
        assert max(map(len, r.stdout.splitlines())) <= 80, name
        cut = [line for line in r.stdout.splitlines() if "…" in line]
        assert not cut, f"distill {name} --help truncates at 80 columns: {cut}"


def test_boolean_flags_and_their_negations(tmp_path):
    r = distill("generate", "--dataset", "x.jsonl", "--output", str(tmp_path / "o"),
                "--overwrite", "--no-overwrite")  # fmt: skip
    assert r.returncode == 2 and "--overwrite and --no-overwrite together" in r.stderr


def test_a_library_failure_is_one_line_pointing_to_the_log_that_holds_its_traceback(tmp_path):
    from test_train import corpus

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2", "hidden_size": "x"}')
    out = tmp_path / "out"
    r = distill("train", "--student", "tiny", "--model", str(broken), "--data",
                str(corpus(tmp_path / "c", 2)), "--output", str(out))  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "hidden_size" in line and "expected int" in line
    (log,) = out.glob("logs/train-*.log")
    assert f"(traceback in {log})" in line and "Traceback" in log.read_text()
