"""Tasks for tests/test_worker.py, in a module of their own that a spawned worker child imports."""

import os
import signal
import threading
import time

from attnbench.worker import emit


def emit_then_return(n):
    for i in range(n):
        emit(("row", i))
    return "done"


def pid():
    return os.getpid()


def add(a, b=0):
    return a + b


def raise_value_error(text):
    raise ValueError(text)


def call_sys_exit(code):
    import sys

    emit("before exit")
    sys.exit(code)


def sigkill_self_after_emit():
    emit(("row", os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def exit_hard(code):
    os._exit(code)


def emit_pid_then_hang():
    emit(os.getpid())
    time.sleep(60)
    return "woke up"


def sigint_self():
    """The terminal's Ctrl-C reaches the whole process group: the worker ignores it."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    return "still here"


def return_unpicklable():
    emit("before")
    return threading.Lock()
