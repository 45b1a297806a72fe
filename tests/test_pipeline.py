"""`distill pipeline`: a file of stages checked before anything runs, lineage that redoes
exactly what changed, resume after a kill, Slurm chains, and the real r1-tiny chain on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill import pipeline as pl
from distill.errors import UserError
from distill.pipeline import load_pipeline, run_pipeline, shipped_pipelines
from distill.pipeline import run as plrun


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def chain(tmp_path: Path) -> Path:
    """generate -> filter -> train -> eval, with a side branch: a second filter of the traces."""
    data = tmp_path / "problems.jsonl"
    data.write_text('{"id": "a", "problem": "What is 1 + 1?", "answer": "2"}\n')
    return write(tmp_path / "p.yaml", {
        "name": "small", "output": str(tmp_path / "run"),
        "stages": [
            {"name": "traces", "command": "generate", "dataset": str(data), "samples": 2},
            {"name": "corpus", "command": "filter", "input": "${traces}"},
            {"name": "other", "command": "filter", "input": "${traces}", "keep": "shortest"},
            {"name": "student", "command": "train", "data": "${corpus}", "max_steps": 5},
            {"name": "score", "command": "eval", "model": "${student}", "benchmark": "aime24"},
        ],
    })  # fmt: skip


class Stub:
    """Stands for each stage's `python -m distill.cli COMMAND`: records the call, makes the
    output folder, and can fail or be killed at a chosen stage."""

    def __init__(self, fail_at: str | None = None, code: int = 1):
        self.calls: list[list[str]] = []
        self.fail_at, self.code = fail_at, code

    def __call__(self, argv: list[str], env: dict | None = None) -> int:
        self.calls.append(argv)
        out = Path(next(a for a in argv if a.startswith("--output=")).split("=", 1)[1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "marker").write_text("x")
        if self.fail_at and out.name == self.fail_at:
            if self.code < 0:
                raise KeyboardInterrupt  # the run was killed while this stage ran
            return self.code
        return 0

    def stages(self) -> list[str]:
        return [Path(next(a for a in c if a.startswith("--output=")).split("=", 1)[1]).name for c in self.calls]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"stages": [{"name": "a", "command": "generat"}]}, "unknown command 'generat'"),
        ({"stages": [{"name": "a", "command": "filter", "input": "${b}"}]}, "dangling reference ${b}"),
        ({"stages": [{"name": "a", "command": "filter", "input": "${b}"}, {"name": "b", "command": "generate"}]}, "forward reference ${b}"),
        ({"stages": [{"name": "a", "command": "generate"}, {"name": "a", "command": "generate"}]}, "defined twice"),
        ({"stages": [{"name": "a", "command": "generate", "temprature": 0.7}]}, "unknown setting 'temprature'"),
        ({"stages": [{"name": "a", "command": "train", "data": "x.jsonl", "lerning_rate": 1}]}, "did you mean 'learning_rate'"),
        ({"stages": [{"name": "a", "command": "generate", "output": "x"}]}, "output"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_before_anything_runs(tmp_path, monkeypatch, edit, message):
    stub = Stub()
    monkeypatch.setattr(plrun, "_call", stub)
    path = write(tmp_path / "bad.yaml", {"output": str(tmp_path / "run"), "stages": [{"name": "a", "command": "generate"}], **edit})  # fmt: skip
    with pytest.raises(UserError, match=message.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")):
        run_pipeline(load_pipeline(str(path)))
    assert stub.calls == [] and not (tmp_path / "run").exists()


def test_stages_wire_outputs_to_inputs_by_name(tmp_path, monkeypatch):
    stub = Stub()
    monkeypatch.setattr(plrun, "_call", stub)
    p = load_pipeline(str(chain(tmp_path)))
    run_pipeline(p)
    assert stub.stages() == ["traces", "corpus", "other", "student", "score"]
    filt = next(c for c in stub.calls if c[3] == "filter")
    assert f"--input={tmp_path / 'run' / 'traces'}" in filt
    train = next(c for c in stub.calls if c[3] == "train")
    assert f"--data={tmp_path / 'run' / 'corpus'}" in train and "--max_steps=5" in train
    assert (tmp_path / "run" / "report.md").is_file()


def test_a_rerun_skips_what_is_done_and_a_change_redoes_exactly_it_and_its_descendants(tmp_path, monkeypatch):
    stub = Stub()
    monkeypatch.setattr(plrun, "_call", stub)
    path = chain(tmp_path)
    run_pipeline(load_pipeline(str(path)))
    stub.calls.clear()
    run_pipeline(load_pipeline(str(path)))
    assert stub.calls == []  # nothing changed: nothing runs
    run_pipeline(load_pipeline(str(path), sets=["corpus.keep=longest"]))
    assert stub.stages() == ["corpus", "student", "score"]  # not traces, not the side branch
    stub.calls.clear()
    # a changed input file (by content) is a change too
    (tmp_path / "problems.jsonl").write_text('{"id": "a", "problem": "What is 2 + 2?", "answer": "4"}\n')
    run_pipeline(load_pipeline(str(path), sets=["corpus.keep=longest"]))
    assert stub.stages() == ["traces", "corpus", "other", "student", "score"]


def test_a_copy_of_the_same_input_is_the_same_input(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b" / "a.jsonl"
    b.parent.mkdir()
    a.write_text("same\n")
    b.write_text("same\n")
    os.utime(b, (1, 1))  # another mtime, as a fresh checkout gives
    assert pl.fingerprint(a) == pl.fingerprint(b)


def test_a_killed_stage_resumes_and_finished_stages_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(plrun, "_call", Stub(fail_at="student", code=-9))
    path = chain(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(load_pipeline(str(path)))
    p = load_pipeline(str(path))
    digest = pl.digests(p)
    assert [pl.state(p, s.name, digest[s.name]) for s in p.stages] == ["done", "done", "done", "interrupted", "pending"]  # fmt: skip
    stub = Stub()
    monkeypatch.setattr(plrun, "_call", stub)
    run_pipeline(p)
    assert stub.stages() == ["student", "score"]
    train = stub.calls[0]
    assert "--resume" in train  # train resumes from its checkpoints
    assert pl.read_record(p, "student")["attempts"] == 2


def test_a_failed_stage_stops_the_run_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(plrun, "_call", Stub(fail_at="corpus", code=2))
    with pytest.raises(UserError, match="stage 'corpus' \\(distill filter\\) failed with exit code 2"):
        run_pipeline(load_pipeline(str(chain(tmp_path))))


def test_dry_run_and_the_slurm_chain(tmp_path, monkeypatch):
    stub = Stub()
    monkeypatch.setattr(plrun, "_call", stub)
    p = load_pipeline(str(chain(tmp_path)))
    text = run_pipeline(p, dry_run=True)
    assert text.count("# ") == 5 and "distill train --data=" in text and stub.calls == []
    script = run_pipeline(p, dry_run=True, launcher="slurm")
    assert script.count("sbatch --parsable") == 5
    # each stage after its parents: the eval waits for the train job, the train for its filter
    assert '--dependency=afterok:$J3 "$S/score.sbatch"' in script
    assert '--dependency=afterok:$J1 "$S/student.sbatch"' in script
    assert "--stage=student" in script and not (tmp_path / "run").exists()


def test_the_shipped_pipelines_load_and_check():
    assert {"r1-tiny", "r1-tiny-quick", "distill-only", "r1-qwen2.5-math-7b"} <= set(shipped_pipelines())
    for name in shipped_pipelines():
        p = load_pipeline(name)
        pl.check(p)  # every stage's settings, recipes, profiles and TRL fields
        assert run_pipeline(p, dry_run=True).count("distill ") >= len(p.stages) - 1


def test_the_gpu_chain_is_r1s_four_stages_plus_distillation_on_slurm(tmp_path):
    p = load_pipeline("r1-qwen2.5-math-7b", output=tmp_path / "r1")
    script = run_pipeline(p, dry_run=True, launcher="slurm")
    commands = [s.command for s in p.stages]
    assert commands.count("rl") == 2 and commands.count("train") >= 2 and "generate" in commands
    assert "#SBATCH --nodes=" in script and "--gres=gpu:8" in script
    rl = [s for s in p.stages if s.command == "rl"]
    assert any("reward-model" in s.settings for s in rl)  # stage 4: a reward model for general prompts


@pytest.mark.slow
def test_r1_tiny_quick_runs_every_stage_resumes_after_a_kill_and_a_rerun_redoes_nothing(tmp_path):
    out = tmp_path / "r1"
    env = {**os.environ, "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "distill.cli", "pipeline", "run", "r1-tiny-quick", "--output", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    # kill the whole run (SIGKILL, engines included) while the first RL stage trains
    deadline = time.time() + 900
    while not (out / ".pipeline" / "reasoning_rl.json").is_file():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    time.sleep(5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {f.stem: json.loads(f.read_text()) for f in (out / ".pipeline").glob("*.json")}
    assert before["cold_start_sft"]["state"] == "done" and before["reasoning_rl"]["state"] == "running"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = {f.stem: json.loads(f.read_text()) for f in (out / ".pipeline").glob("*.json")}
    for name in ("cold_start_traces", "cold_start_data", "cold_start_sft"):
        assert after[name] == before[name]  # finished stages were not redone
    assert after["reasoning_rl"]["attempts"] == 2 and all(v["state"] == "done" for v in after.values())
    report = (out / "report.md").read_text()
    assert "eval_student" in report and (out / "report.png").stat().st_size > 1000
    results = json.loads((out / "eval_student" / "results.json").read_text())
    assert results["benchmarks"]
    # the same command again: the real outputs, files and fingerprints read as unchanged, so
    # nothing runs (a changed setting redoing exactly its stage and descendants is checked on
    # the same machinery above, without the minutes of training)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    again = {f.stem: json.loads(f.read_text()) for f in (out / ".pipeline").glob("*.json")}
    assert again == after and r.stderr.count("done, skipped") == len(after)
