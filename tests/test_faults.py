"""Fault injection (issue #20): what each command leaves after a kill, a full disk, a dead or
silent endpoint, a second run on the same output, a bad name; docs/reliability.md says it.

Kills land at chosen points: the command runs under `PRELUDE`, which wraps one function
(`os.replace`, pyarrow's `write_table`, ...) so that a call on a matching path SIGKILLs the
process (or raises ENOSPC) before or after the real call. A full disk is a real tmpfs mounted
in a private mount namespace (`unshare -rm`) where the kernel allows one, else ENOSPC injected
at pyarrow's write. Endpoints are loopback servers that refuse, hang or fail (servers.py).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_jsonl
from hub_standin import TOKEN, HubStandIn
from servers import SilentServer, closed_port, deepseek_server
from test_filter import make_corpus, record, think

from distill.errors import UserError
from distill.lock import LOCK_NAME, output_lock
from distill.records import corpus_files, read_corpus

pytestmark = pytest.mark.slow  # subprocess-heavy: each command pays its start-up

PRELUDE = r"""
import errno, fnmatch, importlib, os, signal, sys
target, pattern, when, action, nth = sys.argv[1:6]
del sys.argv[1:6]
module, name = target.rsplit(".", 1)
owner = importlib.import_module(module)
real = getattr(owner, name)
hits = 0

def strike():
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def wrapped(*args, **kwargs):
    global hits
    hit = any(fnmatch.fnmatch(str(a), pattern) for a in args if isinstance(a, (str, os.PathLike)))
    hits += hit
    armed = hit and hits == int(nth)
    if armed and when == "before":
        strike()
    out = real(*args, **kwargs)
    if armed and when == "after":
        strike()
    return out

setattr(owner, name, wrapped)
sys.argv[0] = "distill"
from distill.cli import main
main()
"""


def distill(
    *args: str, fault: tuple | None = None, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the CLI; `fault` = (function, path pattern, before|after, kill|enospc, nth call)."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    cmd = [sys.executable, "-c", PRELUDE, *map(str, fault)] if fault else [sys.executable, "-m", "distill.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def one_error_line(r: subprocess.CompletedProcess, code: int, text: str, alone: bool = False) -> str:
    """The run ended with exit `code` and one `error:` line holding `text`, no traceback."""
    assert r.returncode == code, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and text in lines[-1], r.stderr[-3000:]
    if alone:  # refused before any work: nothing else was said
        assert len(lines) == 1, r.stderr
    return lines[-1]


def exactly_once(corpus: Path, expected: int) -> None:
    table = read_corpus(corpus)
    keys = Counter(zip(table.column("problem_id").to_pylist(), table.column("sample_index").to_pylist(), strict=True))
    assert len(keys) == expected and set(keys.values()) == {1}
    assert not list(corpus.glob(".*.tmp-*"))


# --- a fast teacher on loopback -----------------------------------------------------------


def teacher_profile(tmp: Path, url: str, **server) -> Path:
    settings = {"base_url": url, "api_key_env": "FAULTS_KEY", "max_concurrency": 1, "retries": 0,
                "n_per_request": False, **server}  # fmt: skip
    path = tmp / "served.yaml"
    path.write_text(json.dumps({"model": "served", "backend": "openai", "server": settings,
                                "sampling": {"max_tokens": 64}}))  # fmt: skip
    return path


def problems(tmp: Path, n: int, name: str = "problems.jsonl") -> Path:
    return write_jsonl(tmp / name, [{"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)])


@pytest.fixture
def server():
    srv, _ = deepseek_server("k3y")
    yield srv
    srv.close()


KEY = {"FAULTS_KEY": "k3y"}


# --- 1. a filter output is the old one or the new one, never a mix -------------------------


def traces(tmp: Path) -> Path:
    """Two problems x 3 samples: a wrong sample per problem, so --keep changes the kept rows."""
    rows = [record(f"p{i}", j, f"What is {i} + {j}?", str(i + j), think(f"Adding {i} and {j}.", f"\\boxed{{{i + j + (j == 2)}}}"))
            for i in range(2) for j in range(3)]  # fmt: skip
    return make_corpus(tmp / "traces", rows)


def kept_ids(out: Path) -> list[str]:
    return sorted(read_corpus(corpus_files(out)).column("id").to_pylist())


def assert_whole(out: Path, expected_kept: list[str]) -> None:
    """Every way of reading the output agrees on one complete output: never a rejected row
    as kept, never the report of another split."""
    import datasets

    assert kept_ids(out) == expected_kept
    assert sorted(read_corpus(out / "kept").column("id").to_pylist()) == expected_kept
    ds = datasets.load_dataset("parquet", data_files=str(out / "kept" / "*.parquet"), split="train")
    assert sorted(ds["id"]) == expected_kept and set(ds["kept"]) == {True}
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["kept"] == len(expected_kept)
    assert report["counts"]["rejected"] == read_corpus(out / "rejected").num_rows


@pytest.mark.parametrize(
    "fault, new_output_visible",
    [
        (("pyarrow.parquet.write_table", "*/rejected/.shard-*", "before", "kill", 1), False),
        (("os.replace", "*/.output", "before", "kill", 1), False),  # all written, not switched
        (("os.replace", "*/.output", "after", "kill", 1), True),  # switched, not tidied
    ],
    ids=["writing-new-split", "before-switch", "after-switch"],
)
def test_filter_killed_at_any_point_leaves_the_old_output_or_the_new(tmp_path, fault, new_output_visible):
    inp, out = traces(tmp_path), tmp_path / "corpus"
    r = distill("filter", "--input", inp, "--output", out, "--keep", "all", "--near-dup-threshold", "0")
    assert r.returncode == 0, r.stderr
    old = kept_ids(out)
    assert len(old) == 4  # two right samples of each problem
    args = ["filter", "--input", inp, "--output", out, "--keep", "first", "--near-dup-threshold", "0"]
    r = distill(*args, fault=fault)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    new = ["p0/0", "p1/0"]
    assert_whole(out, new if new_output_visible else old)
    r = distill(*args)  # the rerun completes the new output and clears what the kill left
    assert r.returncode == 0, r.stderr
    assert_whole(out, new)
    generations = sorted(p.name for p in out.iterdir() if p.name.startswith(".output"))
    assert generations == [".output", os.readlink(out / ".output")]  # no debris of the killed run


def test_an_output_no_run_finished_is_refused_by_every_reader(tmp_path):
    from distill.students.data import load_rows

    inp, out = traces(tmp_path), tmp_path / "corpus"
    r = distill("filter", "--input", inp, "--output", out, fault=("os.replace", "*/.output", "before", "kill", 1))
    assert r.returncode == -signal.SIGKILL and (out / ".output-1" / "rejected").is_dir()
    legacy = tmp_path / "legacy"  # distill before the pointer, killed between its two renames
    (legacy / "rejected").mkdir(parents=True)
    shutil.copy(out / ".output-1" / "rejected" / "shard-00000.parquet", legacy / "rejected")
    shutil.copy(out / ".output-1" / "report.json", legacy / "report.json")
    for folder in (out, legacy):
        for path in (folder, folder / "kept"):
            with pytest.raises(UserError, match="incomplete filter output"):
                corpus_files(path)
        with pytest.raises(UserError, match="incomplete filter output"):
            load_rows(str(folder))  # `distill train --data` never trains on rejected rows
        r = distill("filter", "--input", folder, "--output", tmp_path / f"again-{folder.name}")
        one_error_line(r, 2, "incomplete filter output", alone=True)
    hub = HubStandIn(tmp_path / "hub")
    try:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
        r = distill("push", legacy, "--repo", "tester/corpus", env=env)
        one_error_line(r, 2, "incomplete filter output")
        assert not [c for c in hub.calls if c.startswith("commit")]  # nothing published
    finally:
        hub.close()
    # the same older layout, complete, still reads
    shutil.copytree(out / ".output-1" / "kept", legacy / "kept")
    assert len(corpus_files(legacy)) == 1 and read_corpus(legacy).num_rows == 4


def test_a_train_killed_in_its_final_save_is_refused_until_a_rerun_completes_it(tiny_qwen, tmp_path):
    """Weights half-overwritten by a kill must not be evaluated, trained on or published."""
    from test_train import corpus

    out, data = tmp_path / "model", corpus(tmp_path / "c", 8)
    args = ["train", "--student", "tiny", "--model", tiny_qwen, "--data", data, "--output", out,
            "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip
    r = distill(*args, fault=("distill.students.sft.save_final", "*", "after", "kill", 1))
    assert r.returncode == -signal.SIGKILL and (out / ".distill-incomplete").is_file()
    assert not (out / "distill_train.yaml").exists()  # the record comes only with whole weights
    for reader in (["train", "--student", "tiny", "--model", out, "--data", data, "--output", tmp_path / "next"],
                   ["eval", "--model", out, "--benchmark", problems(tmp_path, 2), "--output", tmp_path / "e"],
                   ["push", out, "--repo", "tester/model"]):  # fmt: skip
        one_error_line(distill(*reader, env={"HF_TOKEN": TOKEN}), 2, "final save did not finish")
    r = distill(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / ".distill-incomplete").exists() and (out / "distill_train.yaml").is_file()


def test_an_empty_kept_split_reads_as_zero_rows_with_its_columns(tmp_path):
    import datasets

    rows = [record("p", 0, "What is 1 + 1?", "2", think("One and one.", "\\boxed{3}"))]
    r = distill("filter", "--input", make_corpus(tmp_path / "t", rows), "--output", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    kept, rejected = (read_corpus(corpus_files(tmp_path / "o", s)) for s in ("kept", "rejected"))
    assert kept.num_rows == 0 and rejected.num_rows == 1 and kept.schema == rejected.schema
    files = str(tmp_path / "o" / "kept" / "*.parquet")
    ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    other = datasets.load_dataset("parquet", data_files=str(tmp_path / "o" / "rejected" / "*.parquet"), split="train")
    assert list(ds) == [] and ds.features == other.features
    # training on it: one line, before a model is loaded, and no model folder left behind
    r = distill("train", "--student", "tiny", "--data", tmp_path / "o", "--output", tmp_path / "m")
    one_error_line(r, 2, "no training examples (0 rows")
    assert not (tmp_path / "m").exists()


# --- 2. a failing endpoint gives no score ---------------------------------------------------


@pytest.mark.parametrize("endpoint", ["refused", "hung", "failing"])
def test_eval_against_a_dead_endpoint_writes_no_score(tmp_path, endpoint):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    silent, (failing, _) = SilentServer(), deepseek_server("EMPTY", fail_all=True)
    url = {"refused": f"http://127.0.0.1:{closed_port()}/v1", "hung": silent.url + "/v1", "failing": failing.url}[endpoint]
    try:
        r = distill("eval", "--model", model, "--base-url", url, "--benchmark", problems(tmp_path, 4), "--samples", "2",
                    "--output", tmp_path / "results", "--retries", "0", "--request-timeout", "2")  # fmt: skip
    finally:
        silent.close()
        failing.close()
    one_error_line(r, 1, "problems: 8 of 8 samples failed to generate")
    assert "no score written" in r.stderr
    assert not (tmp_path / "results" / "results.json").exists()
    assert not list(model.glob("eval_results.*")) and not (tmp_path / "results" / "samples").exists()


def test_eval_counts_failed_requests_and_a_rerun_retries_them(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    srv, seen = deepseek_server("EMPTY", fail_every=20)  # 1 request of the first 20 fails
    bench = problems(tmp_path, 20)
    try:
        args = ["eval", "--model", model, "--base-url", srv.url, "--benchmark", bench, "--samples", "1",
                "--retries", "0"]  # fmt: skip
        r = distill(*args, "--output", tmp_path / "strict")
        one_error_line(r, 1, "problems: 1 of 20 samples failed to generate (most often: HTTP 500")
        r = distill(*args, "--output", tmp_path / "strict")  # the failed request is retried
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / "strict" / "results.json").read_text())["benchmarks"]["problems"]["failed"] == 0
        srv_calls = seen["requests"]
        r = distill(*args, "--output", tmp_path / "lenient", "--max-failed-share", "0.1")
        assert r.returncode == 0, r.stderr
        assert seen["requests"] == srv_calls + 20
        results = json.loads((tmp_path / "lenient" / "results.json").read_text())["benchmarks"]["problems"]
        assert results["failed"] == 1 and "| failed |" in (tmp_path / "lenient" / "results.md").read_text()
        assert (model / "eval_results.md").is_file()
    finally:
        srv.close()


# --- 3. one writer per output folder ----------------------------------------------------------


def start_generate(tmp: Path, profile: Path, data: Path, out: Path, chunk: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "generate", "--teacher", str(profile), "--dataset", str(data),
         "--chunk-size", str(chunk), "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **KEY},
        start_new_session=True,
    )  # fmt: skip


def wait_for_holder(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid:
                return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    pytest.fail("the first run never took the lock")


def test_a_second_run_on_the_same_output_is_refused_and_names_the_first(tmp_path):
    srv, _ = deepseek_server("k3y", delay=0.05)
    try:
        profile, data, out = teacher_profile(tmp_path, srv.url), problems(tmp_path, 100), tmp_path / "out"
        first = start_generate(tmp_path, profile, data, out)
        wait_for_holder(out, first)
        r = distill("generate", "--teacher", profile, "--dataset", data, "--output", out, env=KEY)
        line = one_error_line(r, 2, f"{out}: in use by `distill generate` (pid {first.pid} on ")
        assert "wait for it to end or stop it" in line
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        srv.close()
    exactly_once(out, 100)


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, server):
    profile, data, out = teacher_profile(tmp_path, server.url), problems(tmp_path, 300), tmp_path / "out"
    first = start_generate(tmp_path, profile, data, out, chunk=5)  # 60 shards: killed mid-run
    wait_for_holder(out, first)
    time.sleep(1)
    assert first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    r = distill("generate", "--teacher", profile, "--dataset", data, "--chunk-size", "5", "--output", out, env=KEY)
    assert r.returncode == 0, r.stderr
    assert "taking over the lock of a run that ended without releasing it" in r.stderr
    assert f"pid {first.pid}" in r.stderr
    exactly_once(out, 300)
    assert (out / LOCK_NAME).read_text() == ""  # released cleanly this time


def test_every_command_that_writes_an_output_takes_its_lock(tmp_path):
    folder = make_corpus(tmp_path / "held", [record("a", 0, "What is 1 + 1?", "2", think("Two.", "\\boxed{2}"))])
    data = problems(tmp_path, 2)
    hub = HubStandIn(tmp_path / "hub")
    commands = {
        "generate": ["generate", "--dataset", data, "--output", folder],
        "filter": ["filter", "--input", make_corpus(tmp_path / "in", [record("b", 0, "What is 2 + 2?", "4", think("Four.", "\\boxed{4}"))]), "--output", folder],
        "eval": ["eval", "--model", "m", "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--benchmark", data, "--output", folder],
        "demo": ["demo", "--quick", "--output", folder],
        "merge": ["merge", tmp_path / "in", "--output", folder],
        "push": ["push", folder, "--repo", "tester/held"],
        "train": ["train", "--student", "tiny", "--data", folder, "--output", folder],
        "rl": ["rl", "--recipe", "tiny", "--data", data, "--output", folder],
    }  # fmt: skip
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
    try:
        with output_lock(folder, "distill test"):
            for name, args in commands.items():
                r = distill(*args, env=env)
                assert name and one_error_line(r, 2, f"{folder}: in use by `distill test` (pid {os.getpid()} on ")
    finally:
        hub.close()
    assert read_corpus(folder).num_rows == 1 and not [c for c in hub.calls if c.startswith("commit")]


def test_the_lock_in_one_process(tmp_path):
    folder = tmp_path / "new"
    with output_lock(folder, "distill a"), output_lock(folder, "distill b"):  # nested: reused
        assert json.loads((folder / LOCK_NAME).read_text())["command"] == "distill a"
    assert not (tmp_path / "new").exists()  # made for the run, which wrote nothing in it
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file: is a file, not a folder"), output_lock(tmp_path / "file", "x"):
        pass


# --- 5. the Hub: timeouts and unreachable endpoints ---------------------------------------------


@pytest.mark.parametrize("endpoint", ["hung", "refused"])
def test_the_token_check_on_a_dead_hub_is_one_line(tmp_path, endpoint):
    silent = SilentServer()
    url = silent.url if endpoint == "hung" else f"http://127.0.0.1:{closed_port()}"
    corpus = make_corpus(tmp_path / "c", [record("a", 0, "What is 1 + 1?", "2", think("Two.", "\\boxed{2}"))])
    env = {"HF_ENDPOINT": url, "HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "0", "DISTILL_HUB_TIMEOUT": "2"}
    started = time.monotonic()
    try:
        r = distill("push", corpus, "--repo", "tester/x", env=env)
    finally:
        silent.close()
    text = "did not answer within 2 s while checking the token" if endpoint == "hung" else "cannot reach the Hugging Face Hub"
    one_error_line(r, 1, text, alone=True)
    assert url in r.stderr and time.monotonic() - started < 30


# --- 7. every name is checked before the work --------------------------------------------------


def test_unknown_names_fail_before_any_work(tmp_path):
    bench = problems(tmp_path, 3, "bench.jsonl")
    inp = traces(tmp_path)
    r = distill("filter", "--input", inp, "--output", tmp_path / "o", "--decontaminate", f"{bench},{tmp_path}/nope.jsonl")
    one_error_line(r, 2, "nope.jsonl: no such file or folder")
    assert not (tmp_path / "o").exists()  # nothing verified, nothing written
    r = distill("eval", "--model", "m", "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--benchmark",
                f"{bench},{tmp_path}/nope.jsonl", "--output", tmp_path / "r")  # fmt: skip
    one_error_line(r, 2, "nope.jsonl: no such file or folder", alone=True)
    assert not (tmp_path / "r").exists()  # the first benchmark was not generated


# --- 8. paths and models that cannot work ----------------------------------------------------


def test_bad_output_locations_and_models_are_one_line(tmp_path):
    data = problems(tmp_path, 2)
    (tmp_path / "file").write_text("x")
    r = distill("generate", "--dataset", data, "--output", tmp_path / "file")
    one_error_line(r, 2, "file: is a file, not a folder", alone=True)
    r = distill("generate", "--dataset", data, "--output", tmp_path / "file" / "sub")
    one_error_line(r, 2, "cannot create the output folder (Not a directory)", alone=True)
    for model in ("./no/such/model", "not a model!"):
        r = distill("generate", "--dataset", data, "--output", tmp_path / "o", "--model", model)
        one_error_line(r, 2, f"--model {model}: no such model folder, and not a Hub id")
        assert not (tmp_path / "o").exists()


def unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def in_namespace(tmp: Path, script: str) -> subprocess.CompletedProcess:
    """Run a shell script as root of a private user + mount namespace (nothing leaks out)."""
    return subprocess.run(["unshare", "-rm", "sh", "-ec", script], capture_output=True, text=True, timeout=600,
                          cwd=tmp, env={**os.environ, **KEY})  # fmt: skip


@pytest.mark.skipif(not unshare_works(), reason="no user namespaces here to mount a read-only folder")
def test_a_read_only_output_location_is_one_line(tmp_path):
    (tmp_path / "ro").mkdir()
    data = problems(tmp_path, 2)
    r = in_namespace(tmp_path, f"mount --bind ro ro && mount -o remount,bind,ro ro && "
                               f"{sys.executable} -m distill.cli generate --dataset {data} --output ro/out")  # fmt: skip
    one_error_line(r, 2, "ro/out: cannot create the output folder (Read-only file system)", alone=True)


def disk_full(tmp: Path, args: list, rerun_check: str, nth: int) -> tuple[subprocess.CompletedProcess, str]:
    """Run `distill ARGS` writing to tmp/disk while it fills up, then free the disk and run it
    again; returns the first run and the output of `rerun_check` (python) after the rerun.
    With user namespaces: a real 4 MB tmpfs with 96 kB left. Without: ENOSPC injected on the
    `nth` parquet write (the same code path, short of a real full disk)."""
    cli = f"{sys.executable} -m distill.cli " + " ".join(map(str, args))
    check = f"{sys.executable} -c '{rerun_check}'"
    if unshare_works():
        (tmp / "disk").mkdir()
        r = in_namespace(tmp, f"""
            mount -t tmpfs -o size=4m tmpfs disk
            head -c $((4096 * 1024 - 96 * 1024)) /dev/zero > disk/filler
            set +e; {cli} 2> first.err; echo $? > first.rc; set -e
            rm disk/filler
            {cli} 2> second.err
            {check} > check.out
        """)
        assert r.returncode == 0, r.stderr + (tmp / "second.err").read_text()
        first = subprocess.CompletedProcess(cli, int((tmp / "first.rc").read_text()), "", (tmp / "first.err").read_text())
        return first, (tmp / "check.out").read_text()
    (tmp / "disk").mkdir()
    first = distill(*args, fault=("pyarrow.parquet.write_table", "*", "before", "enospc", nth), env=KEY, cwd=tmp)
    subprocess.run(cli, shell=True, check=True, cwd=tmp, env={**os.environ, **KEY})
    return first, subprocess.run(check, shell=True, check=True, cwd=tmp, capture_output=True, text=True).stdout


def test_disk_full_during_generate_is_one_line_and_a_rerun_completes_exactly_once(tmp_path, server):
    profile, data = teacher_profile(tmp_path, server.url), problems(tmp_path, 150)
    check = "from distill.records import read_corpus; t = read_corpus(\"disk/out\"); " \
            "import collections, glob; c = collections.Counter(zip(t.column(\"id\").to_pylist())); " \
            "print(t.num_rows, len(c), max(c.values()), len(glob.glob(\"disk/out/.*tmp*\")))"  # fmt: skip
    args = ["generate", "--teacher", profile, "--dataset", data, "--chunk-size", "1", "--output", "disk/out"]
    first, out = disk_full(tmp_path, args, check, nth=4)
    one_error_line(first, 1, "no space left on device; free some and rerun the same command")
    assert "disk/out" in first.stderr.strip().splitlines()[-1]
    assert out.split() == ["150", "150", "1", "0"]  # every row once, no temp file left


def test_disk_full_during_filter_is_one_line_and_a_rerun_completes(tmp_path):
    noise = [os.urandom(400).hex() for _ in range(400)]  # what zstd cannot shrink
    rows = [record(f"p{i}", 0, f"What is {i} + 1?", str(i + 1), think(f"Working: {noise[i]}", f"\\boxed{{{i + 1}}}"))
            for i in range(400)]  # fmt: skip
    inp = make_corpus(tmp_path / "traces", rows)
    check = "import json; from distill.records import read_corpus as r; " \
            "print(r(\"disk/o/kept\").num_rows + r(\"disk/o/rejected\").num_rows, json.load(open(\"disk/o/report.json\"))[\"counts\"][\"in\"])"  # fmt: skip
    first, out = disk_full(tmp_path, ["filter", "--input", inp, "--output", "disk/o", "--workers", "2"], check, nth=2)
    one_error_line(first, 1, "no space left on device")
    assert out.split() == ["400", "400"]


# --- 9. Ctrl-C and SIGTERM --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "ctrl-c-at-start"])
def test_interrupting_the_filter_is_one_line_without_worker_tracebacks(tmp_path, how):
    loop = "```python\ndef f(x):\n    while True:\n        pass\n```"
    rows = [record(f"c{i}", 0, "def f(x):", {"test": "def check(c):\n    assert c(1) == 1", "entry_point": "f"},
                   think("Loop.", loop), domain="code") for i in range(6)]  # fmt: skip
    inp, out = make_corpus(tmp_path / "t", rows), tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "filter", "--input", str(inp), "--output", str(out), "--workers", "2",
         "--code-timeout", "20", "--code-cpu-seconds", "6"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    end = time.time() + 120
    while not (out / ".work").exists() and time.time() < end:
        time.sleep(0.1)
    # at start: while the worker server still imports sympy; else both workers deep in a test
    time.sleep(0.5 if how == "ctrl-c-at-start" else 3)
    assert proc.poll() is None, f"the filter ended before the interrupt: {proc.stderr.read()}"
    if how.startswith("ctrl-c"):
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole foreground group
    else:
        proc.send_signal(signal.SIGTERM)  # what a scheduler sends the job
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == (143 if how == "sigterm" else 130), err
    for noise in ("Traceback", "KeyboardInterrupt", "ConnectionResetError", "BrokenPipeError"):
        assert noise not in err, err
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"


# --- 10. messages that say what is wrong ---------------------------------------------------------


def test_messages_name_the_line_the_field_and_the_path(tmp_path, monkeypatch):
    from distill.config import from_dict
    from distill.filter import FilterConfig, filter_corpus
    from distill.problems import DatasetSpec, load_problems
    from distill.teachers.profile import SamplingConfig, load_profile

    (tmp_path / "bad.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": oops}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl line 2: invalid JSON, Expecting value at column 13"):
        load_problems(DatasetSpec(dataset=str(tmp_path / "bad.jsonl")))
    with pytest.raises(UserError, match=r"unknown field 'temprature' \(did you mean 'sampling.temperature'\?\)"):
        load_profile("tiny", {"temprature": 0.7})
    with pytest.raises(UserError, match=r"field 'temperature' must be a number, got 'hot'"):
        from_dict(SamplingConfig, {"temperature": "hot"}, "p.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for missing in ("data/problems", "a/b/c.x"):
        with pytest.raises(UserError, match=f"^{missing}: no such file or folder$"):
            load_problems(DatasetSpec(dataset=missing))
    traces(tmp_path)
    filter_corpus(FilterConfig(input=Path("traces"), output=Path("o"), progress=False, report=False))
    # the same input by its absolute path is the same input, not "another input"
    filter_corpus(FilterConfig(input=tmp_path / "traces", output=Path("o"), progress=False, report=False))


def test_a_judge_that_gives_no_answer_is_asked_again_on_the_rerun(tmp_path, monkeypatch):
    """A dead judge endpoint: the run reports those rows undecided, but their verdicts are not
    cached as if judged, so the next run sends them to the judge again."""
    from conftest import ScriptedTeacher

    from distill.teachers import Sample
    from distill.verify import VerifyConfig, judge, service

    class Judge(ScriptedTeacher):
        def __init__(self, dead: bool):
            super().__init__()
            self.dead = dead

        def generate(self, requests):
            for req in requests:
                self.requests.append(req)
                if self.dead:
                    yield [Sample(req.key, 0, "", "error", error="connection refused")]
                else:
                    yield [Sample(req.key, 0, "Checking.\nVERDICT: CORRECT", "stop")]

    asked = []

    def run_judge(cfg, rows, rules=None, teacher=None):
        asked.append(sorted(r["id"] for r in rows))
        return judge.run_judge(cfg, rows, rules, teacher=Judge(dead=len(asked) == 1))

    monkeypatch.setattr(service, "run_judge", run_judge)
    rows = [{"id": "a", "problem": "Capital of France?", "reference": '"Paris"',
             "answer": "Paris", "domain": "text"}]  # fmt: skip
    cfg = VerifyConfig(judge="tiny", workers=1)
    first = service.verify_rows(rows, cfg, cache_dir=tmp_path / "cache", show_progress=False)
    assert first["a"]["correctness"]["ok"] is None  # the rules cannot decide, the judge said nothing
    again = service.verify_rows(rows, cfg, cache_dir=tmp_path / "cache", show_progress=False)
    assert asked == [["a"], ["a"]] and again["a"]["correctness"]["ok"] is True
    third = service.verify_rows(rows, cfg, cache_dir=tmp_path / "cache", show_progress=False)
    assert asked == [["a"], ["a"]] and third["a"]["correctness"]["ok"] is True  # judged: cached
