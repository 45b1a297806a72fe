"""Code from traces runs only in the sandbox: correct code passes, wrong code fails, and
hostile code is contained and reported while the machine stays healthy."""

import json
import os
import socket
import time

import psutil
import pytest
from conftest import SHARED_BENCHMARKS

from distill.verify.code_tests import check_code, extract_code, outputs_match
from distill.verify.sandbox import SandboxLimits, run_python

FAST = SandboxLimits(timeout=5, cpu_seconds=3)


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


HUMANEVAL_REF = json.dumps(
    {
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    }
)


def test_humaneval_style():
    assert check_code(HUMANEVAL_REF, fenced("def add(a, b):\n    return a + b")).ok is True
    wrong = check_code(HUMANEVAL_REF, fenced("def add(a, b):\n    return a - b"))
    assert wrong.reason == "wrong_answer" and "AssertionError" in wrong.details["stderr"]


def test_stdin_stdout_style():
    ref = json.dumps({"inputs": ["3\n1 2 3\n", "2\n10 20\n"], "outputs": ["6\n", "30\n"]})
    good = "n = int(input())\nprint(sum(map(int, input().split())))"
    assert check_code(ref, fenced(good)).details == {"tests": 2, "passed": 2}
    v = check_code(ref, fenced("print(6)"))
    assert (
        v.reason == "wrong_answer"
        and v.details["passed"] == 1
        and v.details["status"] == "wrong_output"
    )


def test_functional_and_call_based_styles():
    ref = json.dumps({"functional": "assert Solution().twoSum([2, 7, 11], 9) == [0, 1]"})
    code = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i"
    assert check_code(ref, fenced(code)).ok is True  # `List` comes from the LeetCode preamble
    ref = json.dumps({"inputs": [[[1, 2, 3]], [[]]], "outputs": [6, 0], "fn_name": "total"})
    assert check_code(ref, fenced("def total(xs):\n    return sum(xs)")).ok is True
    assert check_code(ref, fenced("def total(xs):\n    return len(xs)")).ok is False


def test_no_code_and_unverifiable():
    assert check_code(HUMANEVAL_REF, "I would just add them.").reason == "no_answer"
    assert check_code(json.dumps({"weird": 1}), fenced("pass")).reason == "unverifiable_reference"
    assert extract_code("```python\na=1\n```\ntext\n```py\nb=2\n```") == "b=2\n"
    assert extract_code("```\nc=3\n```") == "c=3\n"
    assert outputs_match("1 2\n3.0000001\n", "1 2\n3") and not outputs_match("1 2", "1 3")


def sandbox_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["uids"])
        if p.info["uids"] and p.info["uids"].real >= 100_000
    ]


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    yield srv
    srv.close()


@pytest.mark.parametrize(
    "name, program, expect_status, expect_stderr",
    [
        ("fork bomb", "import os\nwhile True:\n    os.fork()", {"error", "timeout"}, ""),
        ("infinite loop", "while True:\n    pass", {"timeout"}, ""),
        (
            "10 GB allocation",
            "x = bytearray(10 * 1024 ** 3)\nprint(len(x))",
            {"error"},
            "MemoryError",
        ),
        (
            "write outside",
            "open('/tmp/distill-sandbox-escape.txt', 'w').write('x')",
            {"error"},
            "PermissionError",
        ),
        (
            "write project",
            f"open({os.getcwd()!r} + '/escape.txt', 'w').write('x')",
            {"error"},
            "PermissionError",
        ),
        ("output flood", "while True:\n    print('x' * 1000)", {"output_limit"}, ""),
        (
            "detached child",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('done')",
            {"ok"},
            "",
        ),
    ],
)
def test_hostile_code_is_contained(name, program, expect_status, expect_stderr):
    t = time.monotonic()
    r = run_python(program, limits=FAST)
    assert r.status in expect_status, (name, r)
    assert expect_stderr in r.stderr
    assert time.monotonic() - t < FAST.timeout + 5
    assert not os.path.exists("/tmp/distill-sandbox-escape.txt")
    assert not os.path.exists(os.path.join(os.getcwd(), "escape.txt"))
    time.sleep(0.2)
    assert sandbox_processes() == [], "sandbox processes outlived their run"


def test_network_is_cut(listener):
    port = listener.getsockname()[1]
    r = run_python(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')",
        limits=FAST,
    )
    assert r.status == "error" and "connected" not in r.stdout
    # below the audit hook: a raw connect(2) through ctypes
    raw = (
        f"import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(2, 1, 0)\n"
        f"addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\nprint(libc.connect(fd, addr, 16), ctypes.get_errno())"
    )
    r = run_python(raw, limits=FAST)
    if r.isolation["namespaces"] != "none":
        assert r.stdout.split()[0] == "-1", r  # no route out of the new network namespace
    with pytest.raises(TimeoutError):
        listener.accept()


def test_environment_is_stripped(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())")
    assert "HF_TOKEN" not in r.stdout and "OPENAI_API_KEY" not in r.stdout
    assert "distill-sandbox-" in r.stdout.splitlines()[1]


@pytest.mark.skipif(
    not (SHARED_BENCHMARKS / "humaneval.jsonl").is_file(), reason="../shared/benchmarks not present"
)
def test_humaneval_canonical_solutions_pass():
    from distill.verify.pool import run_pool

    rows = [
        json.loads(line)
        for line in (SHARED_BENCHMARKS / "humaneval.jsonl").read_text().splitlines()
    ]
    items = [
        (
            r["task_id"],
            (
                json.dumps({"test": r["test"], "entry_point": r["entry_point"]}),
                fenced(r["prompt"] + r["canonical_solution"]),
            ),
            60.0,
        )
        for r in rows
    ]
    outcomes = list(run_pool(_check, items, workers=2))
    failed = [(o.key, o.failure or o.value) for o in outcomes if o.failure or not o.value["ok"]]
    assert len(outcomes) == 164 and failed == []


def _check(payload):
    from distill.verify.code_tests import check_code

    return check_code(*payload).as_dict()


def _run(program):
    from distill.verify.sandbox import run_python

    return run_python(program).stdout


def test_code_under_test_in_a_pool_worker_gets_the_default_sigint():
    # The pool worker ignores Ctrl-C and the forkserver starts with SIGINT blocked; neither may
    # leak into the program being judged (ignored dispositions and masks survive exec).
    from distill.verify.pool import run_pool

    program = "import signal\ntry:\n    signal.raise_signal(signal.SIGINT)\nexcept KeyboardInterrupt:\n    print('interrupted')"
    [out] = run_pool(_run, [("k", program, 60)], workers=1)
    assert out.failure is None and out.value.strip() == "interrupted"


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox uids exist only where we can drop to them")
def test_sandbox_orphans_adopted_from_a_finished_worker_are_reaped():
    """A verification worker that exits leaves its sandboxes' zombies to us (a subreaper); the
    next run reaps them instead of letting them pile up for the life of the process."""
    run_python("print(1)", limits=FAST)  # become the subreaper, as every verifying process does
    pid = os.fork()
    if pid == 0:  # stands for an orphaned sandbox process that exited
        os.setuid(150_000)
        os._exit(0)
    time.sleep(0.2)
    assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    run_python("print(2)", limits=FAST)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


STDIN_TESTS = json.dumps({"inputs": [f"{i} {i}\n" for i in range(4)], "outputs": [f"{2 * i}\n" for i in range(4)]})


@pytest.mark.parametrize(
    "name, code",
    [
        ("fork bomb", "import os\nwhile True:\n    os.fork()"),
        ("infinite loop", "while True:\n    pass"),
        ("10 GB allocation", "x = bytearray(10 * 1024 ** 3)"),
        ("write outside", "open('/tmp/distill-sandbox-escape.txt', 'w').write('x')"),
        ("output flood", "while True:\n    print('x' * 1000)"),
        ("kills the harness", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint(0)"),
        # pass every test by writing the report line itself: through the harness's descriptors
        ("forges a report", "import json, os\nfor fd in os.listdir(f'/proc/{os.getppid()}/fd'):\n"
         "    with open(f'/proc/{os.getppid()}/fd/{fd}', 'w') as f:\n"
         "        f.write(json.dumps({'i': 3, 'status': 'ok', 'returncode': 0, 'stdout': '6', 'stderr': ''}) + chr(10))"),
        ("detached child", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\na, b = map(int, input().split())\nprint(a + b + 1)"),
    ],
)  # fmt: skip
def test_hostile_code_in_a_batch_of_tests_fails_and_is_contained(name, code):
    """All of a solution's tests run in one sandbox, a forked process each: what a hostile
    solution does there ends in a failed check, within the time limits, leaving nothing behind."""
    t = time.monotonic()
    v = check_code(STDIN_TESTS, fenced(code), FAST)
    assert v.ok is False and v.reason == "wrong_answer", (name, v)
    assert time.monotonic() - t < 4 * FAST.timeout + 10
    assert not os.path.exists("/tmp/distill-sandbox-escape.txt")
    time.sleep(0.2)
    assert sandbox_processes() == [], "sandbox processes outlived their run"


def test_a_batch_runs_each_test_in_a_fresh_process_and_stops_at_the_first_failure():
    # state left by one test (a module global, a file in the work dir) is not seen by the next
    code = "import os\nseen = os.path.exists('mark')\nopen('mark', 'w').write('x')\na, b = map(int, input().split())\nprint(a + b if not seen else -1)"
    assert check_code(STDIN_TESTS, fenced(code), FAST).ok is False  # the file persists: test 1 fails
    code = "import builtins\nbuiltins.count = getattr(builtins, 'count', 0) + 1\na, b = map(int, input().split())\nprint(a + b if builtins.count == 1 else -1)"
    assert check_code(STDIN_TESTS, fenced(code), FAST).ok is True  # interpreter state does not
    slow = "import time\na, b = map(int, input().split())\nif a == 1:\n    print(-1)\nelse:\n    time.sleep(3)\n    print(a + b)"
    t = time.monotonic()
    v = check_code(STDIN_TESTS, fenced(slow), FAST)
    assert v.details["failed_test"] == 1 and time.monotonic() - t < 5  # tests 2 and 3 never ran


def test_call_based_results_are_compared_outside_the_sandbox():
    ref = json.dumps({"fn_name": "f", "inputs": [[1], [2]], "outputs": [[2], [4]]})  # APPS-wrapped
    assert check_code(ref, fenced("def f(x):\n    return 2 * x"), FAST).ok is True
    forged = "class Any:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Any()"
    assert check_code(ref, fenced(forged), FAST).ok is False
