"""The watched worker: results, emits and failures of a child process that is reused and replaced.

The tasks live in tests/_worker_tasks.py, which the spawned child imports. One worker is shared by
the module's tests (each spawn costs a fresh interpreter); every test says which pid it expects.
No test asserts a duration: the timeouts below are generous, for a loaded machine.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnbench.worker import Failure, InlineWorker, Worker, emit
from tests import _worker_tasks as tasks

LONG_S = 120  # a bound on calls that should return quickly, so that a broken worker cannot hang the suite
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def worker():
    with Worker(timeout_setting="point_timeout_s") as w:
        yield w


def _reaped(pid):
    """True once ``pid`` is gone and waited for: a zombie still answers ``kill(pid, 0)``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_emits_arrive_in_order_then_the_result_and_the_child_is_reused(worker):
    assert Worker().pid is None  # started by the first call
    got = []
    assert worker.call(tasks.emit_then_return, (3,), timeout_s=LONG_S, on_emit=got.append) == (
        "result",
        "done",
    )
    assert got == [("row", 0), ("row", 1), ("row", 2)]
    pid = worker.pid
    assert pid is not None and pid != os.getpid()
    assert worker.call(tasks.add, (2,), {"b": 3}, timeout_s=LONG_S) == ("result", 5)
    assert worker.call(tasks.pid, timeout_s=LONG_S) == ("result", pid)


def test_an_exception_and_sys_exit_are_failures_and_the_child_stays(worker):
    pid = worker.call(tasks.pid, timeout_s=LONG_S)[1]

    outcome, failure = worker.call(tasks.raise_value_error, ("bad\nsize " + "x" * 900,), timeout_s=LONG_S)
    assert outcome == "failed" and failure.cause == "exception"
    assert failure.message.startswith("ValueError: bad size x") and "\n" not in failure.message
    assert len(failure.message) <= 500
    assert "Traceback" in failure.detail and "raise_value_error" in failure.detail

    for code in (0, 3):
        got = []
        outcome, failure = worker.call(tasks.call_sys_exit, (code,), timeout_s=LONG_S, on_emit=got.append)
        assert got == ["before exit"]
        assert (outcome, failure.cause) == ("failed", "exception")
        assert failure.message == f"SystemExit: {code} (the code called sys.exit)"

    outcome, failure = worker.call(tasks.return_unpicklable, timeout_s=LONG_S)
    assert (outcome, failure.cause) == ("failed", "exception")
    assert "pickle" in failure.message
    assert worker.pid == pid


def test_the_child_ignores_sigint(worker):
    """Ctrl-C reaches the whole process group; the child leaves it to the parent."""
    pid = worker.call(tasks.pid, timeout_s=LONG_S)[1]
    assert worker.call(tasks.sigint_self, timeout_s=LONG_S) == ("result", "still here")
    assert worker.pid == pid


def test_sigkill_keeps_what_was_emitted_and_the_next_call_gets_a_new_child(worker):
    got = []
    outcome, failure = worker.call(tasks.sigkill_self_after_emit, timeout_s=LONG_S, on_emit=got.append)
    assert outcome == "failed"
    assert failure == Failure("signal", "killed by SIGKILL, most likely out of memory")
    [(_, old)] = got
    assert _reaped(old) and worker.pid is None
    outcome, new = worker.call(tasks.pid, timeout_s=LONG_S)
    assert outcome == "result" and new not in (old, None) and worker.pid == new


def test_an_exit_without_a_result(worker):
    outcome, failure = worker.call(tasks.exit_hard, (3,), timeout_s=LONG_S)
    assert outcome == "failed"
    assert failure == Failure("exit", "the worker exited with code 3")
    assert worker.call(tasks.add, (1, 1), timeout_s=LONG_S) == ("result", 2)


def test_a_hang_past_the_timeout_kills_the_child(worker):
    got = []
    outcome, failure = worker.call(tasks.emit_pid_then_hang, timeout_s=1, on_emit=got.append)
    assert outcome == "failed"
    assert failure == Failure("timeout", "no result after 1 s (point_timeout_s); the worker was killed")
    assert _reaped(got[0]) and worker.pid is None
    assert worker.call(tasks.add, (1, 2), timeout_s=LONG_S) == ("result", 3)


def test_keyboard_interrupt_from_on_emit_kills_the_child_and_propagates(worker):
    pids = []

    def on_emit(pid):
        pids.append(pid)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        worker.call(tasks.emit_pid_then_hang, timeout_s=LONG_S, on_emit=on_emit)
    assert _reaped(pids[0]) and worker.pid is None
    assert worker.call(tasks.add, (2, 2), timeout_s=LONG_S) == ("result", 4)


def test_close_is_idempotent_and_leaks_nothing():
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("counts open files in /proc")
    with Worker() as w:
        w.call(tasks.pid, timeout_s=LONG_S)
    before = len(list(fds.iterdir()))  # after multiprocessing's own first-use files
    w = Worker()
    pids = [w.call(tasks.pid, timeout_s=LONG_S)[1]]
    assert w.call(tasks.exit_hard, (1,), timeout_s=LONG_S)[0] == "failed"
    pids.append(w.call(tasks.pid, timeout_s=LONG_S)[1])
    w.close()
    w.close()
    assert w.pid is None and all(_reaped(p) for p in pids)
    assert len(list(fds.iterdir())) == before


CTRL_C = """
import json, os, signal
from attnbench.worker import Worker
from tests import _worker_tasks as tasks

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job may inherit SIG_IGN
    seen = []

    def on_emit(pid):
        seen.append(pid)
        print(json.dumps({"child": pid}), flush=True)

    with Worker() as w:
        try:
            w.call(tasks.emit_pid_then_hang, timeout_s=%(long)d, on_emit=on_emit)
            print(json.dumps({"interrupted": False}), flush=True)
        except KeyboardInterrupt:
            try:
                os.kill(seen[0], 0)
                reaped = False
            except ProcessLookupError:
                reaped = True
            print(json.dumps({"interrupted": True, "reaped": reaped, "pid": w.pid}), flush=True)
        print(json.dumps({"next": w.call(tasks.add, (4, 5), timeout_s=%(long)d)}), flush=True)
"""


def test_ctrl_c_to_the_process_group_interrupts_the_caller_and_kills_the_child(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(CTRL_C % {"long": LONG_S}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        first = proc.stdout.readline()
        assert first, "the script ended before its worker emitted"
        child = json.loads(first)["child"]
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the caller and its worker
        out, _ = proc.communicate(timeout=LONG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [{"interrupted": True, "reaped": True, "pid": None}, {"next": ["result", 9]}]
    assert proc.returncode == 0 and _reaped(child)


def test_inline_worker_gives_the_same_outcomes():
    w = InlineWorker()
    got = []
    assert w.call(tasks.emit_then_return, (2,), on_emit=got.append) == ("result", "done")
    assert got == [("row", 0), ("row", 1)]
    assert w.call(tasks.add, (2,), {"b": 3}, timeout_s=1) == ("result", 5)
    outcome, failure = w.call(tasks.raise_value_error, ("bad size",))
    assert (outcome, failure.cause, failure.message) == ("failed", "exception", "ValueError: bad size")
    assert "raise_value_error" in failure.detail
    for code in (0, 3):
        outcome, failure = w.call(tasks.call_sys_exit, (code,))
        assert failure == Failure(
            "exception", f"SystemExit: {code} (the code called sys.exit)", failure.detail
        )

    def stop(obj):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        w.call(tasks.emit_then_return, (1,), on_emit=stop)
    assert w.pid == os.getpid()
    w.close()


def test_emit_outside_a_task_is_an_error():
    with pytest.raises(RuntimeError, match="outside a task"):
        emit("nobody listens")
