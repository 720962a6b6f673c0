"""A multi-worker command always ends: the CLI runs it in a child process it can stop.

TensorFlow's ``MultiWorkerMirroredStrategy`` waits for the cluster's other tasks inside C++,
holding the GIL and with no timeout, and its coordination service installs a SIGTERM handler
that only records the signal. So a worker whose peer never starts waited forever and ignored
SIGTERM; nothing inside that process can end the wait. The CLI therefore runs ``train`` and
``tune`` under a cluster ``TF_CONFIG`` as a child process (same arguments, same environment)
and stays outside TensorFlow itself:

- the child reports on a pipe when it starts waiting for the cluster (:data:`WAITING`) and when
  its strategy is ready (:data:`READY`); if the wait lasts longer than
  ``KERAS_TRANSFER_COLLECTIVE_TIMEOUT`` seconds the child is killed and the command ends with
  exit code 3 and the message of ``distribute.NO_PEER``;
- SIGTERM or SIGINT to the command kill the child, and the command ends (exit code 143 or 130);
- the child dies with its parent (``PR_SET_PDEATHSIG``), so killing the command by any means
  leaves no worker behind.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

PIPE_ENV = "KERAS_TRANSFER_SUPERVISOR_FD"
WAITING, READY = b"w", b"r"
COMMANDS = ("train", "tune")


def needed(command: str) -> bool:
    """Whether ``command`` should run under the supervisor (a cluster TF_CONFIG, not yet supervised)."""
    if command not in COMMANDS or PIPE_ENV in os.environ:
        return False
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        return False  # the command itself reports the bad TF_CONFIG
    return sum(len(v) for v in cluster.values()) > 1


def report(state: bytes) -> None:
    """Tell the supervisor (if any) that the cluster wait starts (WAITING) or is over (READY)."""
    fd = os.environ.get(PIPE_ENV)
    if fd is None:
        return
    try:
        os.write(int(fd), state)
    except OSError:
        pass  # the supervisor is gone: PR_SET_PDEATHSIG ends this process
    if state == READY:
        os.close(int(fd))
        del os.environ[PIPE_ENV]


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class _Stopped(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def supervise(argv: list[str], timeout: float, no_peer_message: str) -> int:
    """Run ``keras-transfer argv`` as a child; its exit code, or 3 / 128+signal (see the module)."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen([sys.executable, "-m", "keras_transfer", *argv], pass_fds=(write_end,),
                             env={**os.environ, PIPE_ENV: str(write_end)}, preexec_fn=_die_with_parent)
    os.close(write_end)

    def stop(signum, _frame):
        raise _Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        waiting_since = None
        while child.poll() is None:
            limit = None if waiting_since is None else max(0.0, waiting_since + timeout - time.monotonic())
            ready, _, _ = select.select([read_end], [], [], 1.0 if limit is None else min(limit, 1.0))
            if ready:
                said = os.read(read_end, 16)
                if READY in said or not said:  # ready, or the child closed the pipe: no more waiting
                    break
                if WAITING in said:
                    waiting_since = time.monotonic()
            elif waiting_since is not None and time.monotonic() - waiting_since >= timeout:
                child.kill()
                child.wait()
                print(f"keras-transfer {argv[0]}: error: {no_peer_message}", file=sys.stderr)
                return 3
        return child.wait()
    except _Stopped as stopped:
        child.kill()
        child.wait()
        name = signal.Signals(stopped.signum).name
        print(f"keras-transfer {argv[0]}: stopped by {name}" + (
            "; run the same command with --resume to continue" if argv[0] == "train" else ""), file=sys.stderr)
        return 128 + stopped.signum
    finally:
        os.close(read_end)
        for s, handler in previous.items():
            signal.signal(s, handler)
