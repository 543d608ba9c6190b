"""What every child process of the local stack does first: die with its parent.

Workers are children of the stack; if the stack is killed with SIGKILL they
must not linger. A thread polls the parent pid (PR_SET_PDEATHSIG would fire when the
*thread* that spawned the child exits, and workers are respawned from short-lived
threads). SIGINT is ignored so that Ctrl-C in a terminal, which reaches the whole process
group, leaves the orderly shutdown to the stack.
"""

from __future__ import annotations

import os
import signal
import threading
import time

PARENT_POLL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(PARENT_POLL_S)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
