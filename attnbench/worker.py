"""A watched worker process: run a function in a child, and get its result or a :class:`Failure`.

A :class:`Worker` runs each call in one child process, reused from call to call and replaced when
it dies, so that a call that is killed (the OOM killer's SIGKILL, a segfault), hangs past its
timeout, calls ``sys.exit`` or raises becomes a failure of that call only, and the caller goes on.
Whatever the function sends with :func:`emit` reaches the caller as it is sent, so what was
measured before a crash is kept. :class:`InlineWorker` runs the same calls in this process, for
debugging.

The child is a ``spawn`` child by default (torch and ``fork`` do not mix). The function, its
arguments, what it emits and its result are pickled; the function must be a top-level function of
a module the child can import. The child ignores SIGINT: Ctrl-C in a terminal reaches the whole
process group, and it is the caller that decides what to do (a ``KeyboardInterrupt`` while a call
waits kills the child and propagates). This module knows nothing of what the calls are for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["CAUSES", "Failure", "InlineWorker", "Worker", "emit"]

CAUSES = ("exception", "signal", "timeout", "exit")

MESSAGE_CHARS = 500  # the longest Failure.message
STOP_GRACE_S = 5.0  # close(): how long an idle child may take to leave when asked
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL, and the longest wait for a killed child
STARTUP_S = 300.0  # the most a new child may take to import a task's modules

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_STOP = pickle.dumps(None, protocol=_PROTOCOL)  # the parent's "no more calls"


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a call gave no result.

    Attributes:
        cause: "exception" (the function raised, or called ``sys.exit``; also a task or result that
            could not be pickled), "signal" (the child was killed by one), "timeout" (no result in
            time; the child was killed) or "exit" (the child exited without a result).
        message: one line, at most ``MESSAGE_CHARS`` characters, for a results row.
        detail: more for a person, such as the child's traceback; may be empty.
    """

    cause: str
    message: str
    detail: str = ""


# Where emit() sends: set while a task runs (in a Worker child, or under InlineWorker.call).
_sink: Callable[[Any], None] | None = None


def emit(obj: Any) -> None:
    """Inside a task: send ``obj`` to the caller's ``on_emit`` now.

    In a :class:`Worker` child ``obj`` is pickled and sent at once (a ``TypeError`` or
    ``PicklingError`` if it cannot be); under :class:`InlineWorker` ``on_emit`` is called directly.

    Raises:
        RuntimeError: outside a task run by ``Worker.call`` or ``InlineWorker.call``.
    """
    sink = _sink
    if sink is None:
        raise RuntimeError(
            "emit() was called outside a task: only a function run by Worker.call or "
            "InlineWorker.call can emit"
        )
    sink(obj)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def _describe(exc: BaseException) -> str:
    """``ValueError: bad size`` in one line; ``SystemExit: 3 (the code called sys.exit)``."""
    if isinstance(exc, SystemExit):
        return _one_line(f"SystemExit: {exc.code} (the code called sys.exit)")
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the exception's type
        text = ""
    return _one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _raised(exc: BaseException, context: str = "") -> Failure:
    message = _describe(exc)
    return Failure("exception", _one_line(f"{context}{message}") if context else message, _traceback(exc))


# ---------------------------------------------------------------------------------------------
# The child


def _child_main(conn: multiprocessing.connection.Connection) -> None:
    """The child's loop: read a task, run it, send its emits and then its result or error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # a forked child inherits the parent's blocked SIGINT
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _exit_with_parent()
    lock = threading.Lock()  # a task's threads may emit too

    def send(message: tuple) -> None:
        data = pickle.dumps(message, protocol=_PROTOCOL)
        with lock:
            conn.send_bytes(data)

    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            task = pickle.loads(data)
        except BaseException as exc:  # noqa: BLE001 - e.g. the task's module does not import here
            reply = ("error", *_fields(_raised(exc, "the worker could not read the task: ")))
        else:
            if task is None:
                return
            send(("started",))  # the task's modules are imported: its time limit starts now
            reply = _run(task, send)
        try:
            data = pickle.dumps(reply, protocol=_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - the result could not be pickled
            failure = _raised(exc, "the result could not be sent back (pickled): ")
            data = pickle.dumps(("error", *_fields(failure)), protocol=_PROTOCOL)
        try:
            with lock:
                conn.send_bytes(data)
        except OSError:
            return  # the parent is gone


def _run(task: tuple, send: Callable[[tuple], None]) -> tuple:
    global _sink
    fn, args, kwargs = task
    _sink = lambda obj: send(("emit", obj))  # noqa: E731
    try:
        return ("result", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: the child stays for the next call
        return ("error", *_fields(_raised(exc)))
    finally:
        _sink = None


def _fields(failure: Failure) -> tuple[str, str]:
    return failure.message, failure.detail


def _exit_with_parent() -> None:
    """Leave when the parent dies, even in the middle of a task that hangs."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent has exited
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# The parent


def _shutdown(process: Any, conn: Any, how: str) -> None:
    """Stop a child: ``ask`` (when idle), ``term`` (SIGTERM, then SIGKILL) or ``kill``; reap it."""
    try:
        if how == "ask" and process.is_alive():
            try:
                conn.send_bytes(_STOP)
            except OSError:
                pass
            process.join(STOP_GRACE_S)
        if how in ("ask", "term") and process.is_alive():
            process.terminate()
            process.join(KILL_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join(KILL_GRACE_S)
    finally:
        conn.close()
        if process.exitcode is not None:
            process.close()


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """While a child starts: SIGINT is ignored, which a spawned child inherits (so a Ctrl-C during
    its start-up cannot kill it mid-import, before it ignores SIGINT itself), and blocked in this
    thread, so that this process still gets a Ctrl-C made meanwhile, afterwards.

    Only the main thread can set handlers; elsewhere nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.getsignal(signal.SIGINT)  # None: set outside Python, leave it alone
    try:
        if handler is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class Worker:
    """One child process that runs calls, reused across calls and replaced when it dies.

    The child starts on the first call. One call at a time; not thread-safe. After :meth:`close`
    the next call starts a new child. Also a context manager that closes on exit.

    Args:
        start_method: the multiprocessing start method; ``spawn`` (the default) because torch and
            ``fork`` do not mix.
        timeout_setting: the name the caller's users give the timeout, quoted in the timeout's
            failure message (``no result after 2 s (point_timeout_s); ...``); None to quote none.
    """

    def __init__(self, *, start_method: str = "spawn", timeout_setting: str | None = None) -> None:
        self._context = multiprocessing.get_context(start_method)
        self.timeout_setting = timeout_setting
        self._process: Any = None
        self._conn: Any = None
        self._finalizer: Any = None

    @property
    def pid(self) -> int | None:
        """The child's process id; None before it starts, after it died and after :meth:`close`."""
        return None if self._process is None else self._process.pid

    def call(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        on_emit: Callable[[Any], None] | None = None,
    ) -> tuple[str, Any]:
        """Run ``fn(*args, **kwargs)`` in the child.

        Every :func:`emit` that ``fn`` makes reaches ``on_emit`` here, in order, as it happens.

        Args:
            fn: a picklable top-level function.
            args: its positional arguments (pickled).
            kwargs: its keyword arguments (pickled).
            timeout_s: seconds from the start of ``fn`` (a new child's start-up and imports do
                not count; they have ``STARTUP_S`` at least); then the child is killed (SIGTERM,
                SIGKILL after ``KILL_GRACE_S``) and the call fails with cause "timeout". None: no
                limit.
            on_emit: called with each emitted object; an exception it raises (KeyboardInterrupt
                included) kills the child and propagates.

        Returns:
            ``("result", value)`` or ``("failed", Failure)``.

        Raises:
            KeyboardInterrupt: raised while waiting; the child was killed first.
        """
        start = time.monotonic()
        try:
            task = pickle.dumps((fn, tuple(args), dict(kwargs or {})), protocol=_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - a task that cannot be sent fails like one that raised
            return "failed", _raised(exc, "the task could not be sent to the worker (pickled): ")
        # Until the child has imported the task's modules (a new child imports torch: seconds on a
        # busy machine) only a generous start-up limit applies; timeout_s runs from the task's start.
        deadline = None if timeout_s is None else start + max(timeout_s, STARTUP_S)
        try:
            if self._process is not None and not self._process.is_alive():
                self._end("kill")  # it died while idle
            if self._process is None:
                self._start()
            try:
                self._conn.send_bytes(task)
            except OSError:  # it died before it read the task
                return "failed", self._died()
            return self._wait(deadline, timeout_s, on_emit)
        except BaseException:
            if self._process is not None:
                self._end("kill")
            raise

    def _wait(
        self, deadline: float | None, timeout_s: float | None, on_emit: Callable[[Any], None] | None
    ) -> tuple[str, Any]:
        conn, process = self._conn, self._process
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._end("term")
                quoted = f" ({self.timeout_setting})" if self.timeout_setting else ""
                return "failed", Failure(
                    "timeout", f"no result after {timeout_s:g} s{quoted}; the worker was killed"
                )
            # Wakes on a message, on the child's death (its sentinel) or at the deadline: no polling.
            ready = multiprocessing.connection.wait([conn, process.sentinel], timeout=remaining)
            if conn not in ready:
                if ready:  # the child is gone, and everything it sent has been read
                    return "failed", self._died()
                continue
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):  # the child died, perhaps in the middle of a message
                return "failed", self._died()
            try:
                kind, *fields = pickle.loads(data)
            except Exception as exc:  # noqa: BLE001 - e.g. an emitted class this process cannot import
                self._end("kill")
                return "failed", _raised(exc, "a message from the worker could not be read (unpickled): ")
            if kind == "started":
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
            elif kind == "emit":
                if on_emit is not None:
                    on_emit(fields[0])
            elif kind == "result":
                return "result", fields[0]
            else:
                return "failed", Failure("exception", *fields)

    def _start(self) -> None:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(target=_child_main, args=(child_conn,), name="attnbench-worker")
        try:
            with _sigint_ignored_by_children():
                process.start()
                self._process, self._conn = process, parent_conn
                # At interpreter exit multiprocessing joins its children: stop this one first.
                self._finalizer = multiprocessing.util.Finalize(
                    self, _shutdown, args=(process, parent_conn, "ask"), exitpriority=10
                )
        except BaseException:
            if self._process is not process:
                parent_conn.close()
            raise
        finally:
            child_conn.close()

    def _end(self, how: str) -> None:
        process, conn, finalizer = self._process, self._conn, self._finalizer
        self._process = self._conn = self._finalizer = None
        if finalizer is not None:
            finalizer.cancel()
        if process is not None:
            _shutdown(process, conn, how)

    def _died(self) -> Failure:
        """The failure of a child that ended without a result; it is reaped."""
        process = self._process
        process.join(KILL_GRACE_S)
        code = process.exitcode
        self._end("kill")  # a child that closed its end but lives on is killed
        if code is None:
            return Failure("exit", "the worker closed its connection without a result; it was killed")
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            oom = ", most likely out of memory" if -code == getattr(signal, "SIGKILL", None) else ""
            return Failure("signal", f"killed by {name}{oom}")
        return Failure("exit", f"the worker exited with code {code}")

    def kill(self) -> None:
        """Kill the child now (from any thread: a call waiting on it in another thread then fails)."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def close(self) -> None:
        """Stop the child (asked, then terminated, then killed) and reap it. Idempotent."""
        if self._process is not None:
            self._end("ask")

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class InlineWorker:
    """The :class:`Worker` interface, running each call in this process (for debugging).

    :func:`emit` calls ``on_emit`` directly. An ``Exception`` or ``SystemExit`` from the function
    becomes ``("failed", Failure("exception", ...))``; ``KeyboardInterrupt`` propagates, as does an
    exception raised by ``on_emit``. Nothing is pickled. ``timeout_s`` is ignored: nothing here can
    stop a call that hangs, and a crash (a signal, ``os._exit``) takes this process down.
    """

    @property
    def pid(self) -> int:
        """This process's id: the calls run here."""
        return os.getpid()

    def call(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        on_emit: Callable[[Any], None] | None = None,
    ) -> tuple[str, Any]:
        """Run ``fn(*args, **kwargs)`` here; see :meth:`Worker.call` (``timeout_s`` is ignored)."""
        global _sink
        raised: list[BaseException] = []

        def sink(obj: Any) -> None:
            if on_emit is None:
                return
            try:
                on_emit(obj)
            except BaseException as exc:
                raised.append(exc)  # propagates even if fn catches it, as from a Worker
                raise

        previous, _sink = _sink, sink
        try:
            try:
                value = fn(*args, **(kwargs or {}))
            finally:
                _sink = previous
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failure of the call, as in a Worker
            if raised:
                raise raised[0] from None
            return "failed", _raised(exc)
        if raised:
            raise raised[0]
        return "result", value

    def kill(self) -> None:
        """Nothing to kill: calls run in this process."""

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InlineWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
