"""One writer per output folder: the exclusive lock every command that writes one takes.

Two runs writing the same folder lose rows silently (both number their next shard alike, and
each deletes the other's temp files as debris of a kill), so the second run must stop at
once and say who holds the folder. The lock is flock(2) on `OUTPUT/.distill.lock`: the kernel
drops it when its holder dies, however it dies, so a lock left by a killed run is simply
taken over by the next one; no stale-lock guessing. The file records who holds it (pid,
host, command, since) for the message a second run prints.

Caveat: a child process forked while the lock is held shares it and keeps it until it exits
(vLLM's engine processes are reaped when their parent dies: see reaper.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from distill.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".distill.lock"
_held: dict[Path, int] = {}  # folders this process holds -> fd (demo -> eval -> generate nest)


@contextlib.contextmanager
def output_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold `folder` (created if missing) for the duration; yields the folder.

    A folder another live run holds is a UserError naming that run. A folder this call
    created is removed again on the way out if nothing but the lock was written to it, so a
    run refused before any work leaves nothing behind."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:  # the same process, one stage inside another
        yield folder
        return
    created = make_output_folder(folder)
    fd = _open(folder / LOCK_NAME)
    crashed = False  # a failure that is not the user's: its log is kept, whatever else
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                # a filesystem without locks: say so once, and carry on unguarded
                log.warning(
                    "%s: cannot lock (%s); concurrent runs will not be detected", folder, e.strerror
                )
            else:
                raise UserError(
                    f"{folder}: {_describe(_read(fd))}; wait for it to end or stop it"
                ) from None
        previous = _read(fd)
        if previous:  # a holder that never released: it was killed (the kernel freed its lock)
            log.warning("%s: taking over the lock of a run that ended without releasing it (%s)",
                        folder, _describe(previous, alive=False))  # fmt: skip
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                    "argv": sys.argv, "since": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
        _held[key] = fd
        try:
            yield folder
        except Exception as e:
            crashed = not isinstance(e, UserError)
            raise
    finally:
        if _held.pop(key, None) is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: nobody to take over from
        os.close(fd)  # closing drops the flock
        with contextlib.suppress(OSError):
            # the run wrote nothing but its lock and the log of its refusal: leave no folder
            if created and set(os.listdir(folder)) <= {LOCK_NAME, *(() if crashed else ("logs",))}:
                shutil.rmtree(folder / "logs", ignore_errors=True)
                (folder / LOCK_NAME).unlink()
                folder.rmdir()


def make_output_folder(folder: Path) -> bool:
    """Create `folder` (and parents) if needed; True if it was created. A path that cannot be
    a folder (a file, a read-only place) is a one-line UserError naming it, before any work."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is a file, not a folder; give another --output")
    try:
        folder.mkdir(parents=True)
        return True
    except FileExistsError:
        return False
    except OSError as e:  # NotADirectoryError on a parent that is a file, EROFS, EACCES
        raise UserError(
            f"{e.filename or folder}: cannot create the output folder ({e.strerror})"
        ) from None


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never O_TRUNC: it may be held
    except OSError as e:
        raise UserError(
            f"{path.parent}: cannot write to the output folder ({e.strerror})"
        ) from None


def _read(fd: int) -> dict:
    # through the holder's own descriptor: with NFS's emulated flock, opening and closing the
    # file a second time would drop the lock
    try:
        text = os.pread(fd, 65536, 0).decode()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _describe(holder: dict, alive: bool = True) -> str:
    if not holder:
        return "in use by another distill run (starting up)"
    where = f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
    if alive and holder.get("host") == socket.gethostname() and not _running(holder.get("pid")):
        where += "; that process is gone, a process it started still holds the folder"
    return f"{'in use by ' if alive else ''}`{holder.get('command')}` ({where})"


def _running(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[call-overload]
    except ProcessLookupError:
        return False
    except (OSError, TypeError, ValueError):
        pass  # alive under another user, or no pid recorded
    return True
