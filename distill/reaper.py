"""Kill a process's descendants when it dies, even by SIGKILL.

vLLM's engine processes outlive a SIGKILLed parent and keep their memory (the whole GPU on a
GPU node, the KV-cache share of RAM on a CPU), so the rerun that should resume cannot start.
A small watchdog process remembers the parent's descendants while it lives and kills the
ones still running once it is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys

_WATCHDOG = r"""
import os, signal, sys, time
import psutil

parent = psutil.Process(int(sys.argv[1]))
me = os.getpid()
known = {}
while parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE:
    try:
        for p in parent.children(recursive=True):
            if p.pid != me:
                known[p.pid] = p
    except psutil.Error:
        pass
    time.sleep(0.5)
for p in known.values():
    try:
        if p.is_running():  # psutil compares the start time: a reused pid is not killed
            p.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass
"""

_started = False


def reap_children_on_exit() -> None:
    """Start the watchdog once per process (cheap: it polls every 0.5 s)."""
    global _started
    if _started:
        return
    _started = True
    subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in our process group: a killpg of ours leaves it to clean up
    )
