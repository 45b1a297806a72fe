"""Run untrusted Python (code from teacher traces) in a contained subprocess.

Layers, each used where the OS allows it (`isolation()` reports which were active):
- a fresh temp dir as cwd, removed afterwards; an environment stripped of secrets;
- rlimits: CPU seconds, address space, file size, open files, processes;
- a wall-clock timeout that kills the whole process group (and, below, every process of
  the sandbox's own uid, so a child that escaped the group with setsid dies too);
- output size capped while it is read;
- as root: new network + mount namespaces (no network, read-only-for-us /tmp, /var/tmp,
  /dev/shm) and a drop to an unprivileged uid of its own, so writes outside the work dir fail
  and the process limit counts only this sandbox;
- not root: a new user + network namespace when unprivileged namespaces are enabled;
- always: a Python audit hook in the child that refuses sockets and writes outside the work
  dir (defence in depth: audit hooks cannot be removed from Python code).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distill.config import option

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_REC, MS_PRIVATE = 16384, 1 << 18
PRIVATE_DIRS = (b"/tmp", b"/var/tmp", b"/dev/shm")

# Runs first in the child: audit hook, then the program read from fd 3 as __main__.
BOOTSTRAP = r"""
import os, sys
work = os.getcwd()
def _guard(event, args):
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
        raise PermissionError("sandbox: network access is not allowed")
    if event == "open" and args[1] is not None and any(c in str(args[1]) for c in "wax+"):
        path = args[0]
        if isinstance(path, int):
            return
        full = os.path.realpath(os.path.join(work, os.fsdecode(path)))
        if not (full == work or full.startswith(work + os.sep)) and full != os.devnull:
            raise PermissionError(f"sandbox: write outside the work dir is not allowed: {full}")
sys.addaudithook(_guard)
with os.fdopen(int(sys.argv[1]), "r", encoding="utf-8") as f:
    source = f.read()
sys.argv = ["solution.py"]
code = compile(source, "solution.py", "exec")
del f, source
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    timeout: float = option(
        10.0, help="Wall-clock seconds per test program run.", flag="code-timeout"
    )
    cpu_seconds: int = option(10, help="CPU seconds per run (RLIMIT_CPU).", flag="code-cpu-seconds")
    memory_mb: int = option(
        2048, help="Address space per run in MB (RLIMIT_AS).", flag="code-memory-mb"
    )
    file_size_mb: int = option(
        16, help="Largest file a run may write (RLIMIT_FSIZE).", flag="code-file-size-mb"
    )
    max_processes: int = option(
        32, help="Processes/threads a run may have (RLIMIT_NPROC).", flag="code-max-processes"
    )
    max_output_kb: int = option(
        1024, help="stdout + stderr kept per run; more kills it.", flag="code-max-output-kb"
    )


@dataclass
class RunResult:
    status: str  # ok | error | timeout | output_limit | stopped (by the caller's watch)
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    isolation: dict[str, Any] = field(default_factory=dict)


_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
    return _libc.unshare(flags) == 0


def _mount(
    source: bytes, target: bytes, fstype: bytes | None, flags: int, data: bytes | None
) -> bool:
    return _libc.mount(source, target, fstype, flags, data) == 0


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Orphans of sandboxed programs re-parent to us (not to a pid 1 that may never reap)."""
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _sandbox_uid() -> int:
    # One uid per worker process: the process limit and the final sweep concern only its runs.
    # The pid itself, not a remainder: pid_max reaches 4M on large nodes, and two live workers
    # sharing a uid would kill each other's runs in the sweep.
    return 100_000 + os.getpid()


def _world_executable(path: str) -> bool:
    """Can an unprivileged uid run this interpreter (every directory on the way o+x)?"""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    try:
        for i in range(2, len(parts)):
            if not os.stat(os.sep.join(parts[:i])).st_mode & 0o001:
                return False
        return bool(os.stat(real).st_mode & 0o001)
    except OSError:
        return False


def _interpreter(drop_uid: bool) -> str | None:
    """The Python to run: ours, or a system one an unprivileged uid can reach (stdlib only)."""
    if not drop_uid:
        return sys.executable
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _world_executable(candidate):
            return candidate
    return None


def _preexec(limits: SandboxLimits, uid: int | None, work_fd: int) -> None:
    """In the child, before exec: namespaces, privilege drop, rlimits. Must not raise late."""
    # The pool worker ignores Ctrl-C (its parent decides when to stop); the program under test
    # gets a default SIGINT, as it would anywhere else (it is in its own session regardless).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if uid is not None:
        if _unshare(CLONE_NEWNS | CLONE_NEWNET) and _mount(
            b"none", b"/", None, MS_REC | MS_PRIVATE, None
        ):
            for d in PRIVATE_DIRS:
                if os.path.isdir(d):
                    _mount(b"tmpfs", d, b"tmpfs", 0, b"mode=755,size=1m")
        os.fchdir(work_fd)  # the real work dir, even where its path is now hidden by a tmpfs
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    elif os.geteuid() != 0:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    else:
        _unshare(CLONE_NEWNET)
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb, limits.file_size_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nproc = limits.max_processes if uid is not None else _own_processes() + limits.max_processes
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _own_processes() -> int:
    """Processes + threads of this uid: RLIMIT_NPROC counts them all when we cannot change uid."""
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the sandbox uid (a fork bomb's escaped children included),
    then reap them: as a child subreaper we inherited the orphans, so no zombies pile up."""
    seen: set[int] = set()
    for _ in range(5):
        found = [int(p) for p in os.listdir("/proc") if p.isdigit() and _owner(p) == uid]
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        seen.update(found)
        if not found:
            break
        time.sleep(0.02)
    for pid in seen:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    _reap_adopted()


def _reap_adopted() -> None:
    """Reap exited sandbox processes that re-parented to us: as a subreaper this process also
    inherits the orphans of worker processes that ran sandboxes and have since exited, and
    nobody else will ever wait for them (zombies would pile up for the process's life)."""
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (_owner(pid) or 0) < 100_000:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if state == "Z" and ppid == me:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(int(pid), os.WNOHANG)


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def isolation() -> dict[str, Any]:
    """What this machine lets the sandbox do (recorded in verdict details)."""
    root = os.geteuid() == 0
    drop = root and _interpreter(True) is not None
    return {
        "uid_drop": drop,
        "namespaces": "net+mount" if drop else "user+net" if not root else "none",
        "audit_hook": True,
        "interpreter": _interpreter(drop),
    }


def _clean_env(work: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": work,
        "TMPDIR": work,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def run_python(
    program: str,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    watch: Callable[[bytearray], bool] | None = None,
) -> RunResult:
    """Run `program` as __main__ with `stdin`; never raises for anything the program does.
    `watch(stdout so far)` is called as output arrives; True ends the run at once (status
    "stopped": the caller has seen what it needed)."""
    limits = limits or SandboxLimits()
    _become_subreaper()
    info = isolation()
    uid = _sandbox_uid() if info["uid_drop"] else None
    work = tempfile.mkdtemp(prefix="distill-sandbox-")
    started = time.monotonic()
    try:
        if uid is not None:
            os.chown(work, uid, uid)
        stdin_path = os.path.join(work, ".stdin")
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(stdin)
        work_fd = os.open(work, os.O_RDONLY)
        src_r, src_w = os.pipe()
        try:
            with open(stdin_path, "rb") as stdin_file:
                proc = subprocess.Popen(
                    [info["interpreter"], "-I", "-c", BOOTSTRAP, str(src_r)],
                    stdin=stdin_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=work,
                    env=_clean_env(work),
                    pass_fds=(src_r,),
                    preexec_fn=lambda: _preexec(limits, uid, work_fd),
                    start_new_session=True,
                )
        finally:
            os.close(src_r)
            os.close(work_fd)
        try:
            os.write(src_w, program.encode("utf-8"))
        except (BrokenPipeError, OSError):
            pass  # the child died before reading: its status tells why
        finally:
            os.close(src_w)
        status, out, err = _collect(proc, limits, started, watch)
        if proc.returncode == -signal.SIGXCPU:
            status = "timeout"  # the CPU-seconds limit
        if uid is not None:
            _kill_uid(uid)
        if status == "ok" and proc.returncode != 0:
            status = "error"
        return RunResult(
            status=status,
            returncode=proc.returncode,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            seconds=round(time.monotonic() - started, 3),
            isolation=info,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _collect(
    proc: subprocess.Popen,
    limits: SandboxLimits,
    started: float,
    watch: Callable[[bytearray], bool] | None = None,
) -> tuple[str, bytes, bytes]:
    """Read stdout/stderr with a size cap until exit, the wall deadline, or `watch` says stop."""
    cap = limits.max_output_kb * 1024
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for stream in bufs:
        sel.register(stream, selectors.EVENT_READ)
    status = "ok"
    deadline = started + limits.timeout
    exited_at = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            status = "timeout"
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break  # a detached child still holds the pipes: the program itself is done
        for key, _ in sel.select(timeout=min(deadline - now, 0.1)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            bufs[key.fileobj] += chunk
            if watch is not None and key.fileobj is proc.stdout and watch(bufs[proc.stdout]):
                status = "stopped"
                break
        if status == "stopped":
            break
        if sum(len(b) for b in bufs.values()) > cap:
            status = "output_limit"
            break
    if status != "ok":
        _killpg(proc)
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()) if status == "ok" else 5)
    except subprocess.TimeoutExpired:
        status = "timeout"
        _killpg(proc)
        proc.wait()
    for stream in bufs:
        stream.close()
    return status, bytes(bufs[proc.stdout][:cap]), bytes(bufs[proc.stderr][:cap])


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
