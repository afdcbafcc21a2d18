"""Ctrl-C and SIGTERM as exceptions, so long writers remove their temporary files on the way out.

A service manager, `timeout` or `kill` sends SIGTERM, whose default action ends the process at once and
leaves a half-written temporary file behind (2 GB for a MURA image cache). Inside `signals_raise()`
SIGTERM raises `Terminated` (a `KeyboardInterrupt`, so the CLI reports it like Ctrl-C) and every
`finally` block runs. Python swallows an exception raised inside some hooks (fork's at-fork handlers
among them), so the interrupt is also recorded: `raise_if_interrupted()` raises it again at the next
safe point, and `deferred()` holds it over a stretch that must not be cut, such as forking workers.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception."""


class _State:
    caught: BaseException | None = None
    deferred = False


_state = _State()


def raise_if_interrupted() -> None:
    """Raise the interrupt caught so far again (no-op when none was)."""
    if _state.caught is not None:
        raise _state.caught


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise them."""
    _state.deferred = True
    try:
        yield
    finally:
        _state.deferred = False
    raise_if_interrupted()


def _interrupt(signum: int, _frame: object) -> None:
    error = Terminated(f"terminated by signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()
    _state.caught = _state.caught or error
    if not _state.deferred:
        raise error


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` and Ctrl-C `KeyboardInterrupt` (main thread only)."""
    _state.caught = None
    if threading.current_thread() is not threading.main_thread():  # signal handlers live there only
        yield
        return
    previous = {
        signum: signal.signal(signum, _interrupt)
        for signum in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(signum) is not signal.SIG_IGN  # nohup and background jobs keep their choice
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _state.caught = None


def worker_ignores_interrupts() -> None:
    """Process-pool initializer: the parent alone handles Ctrl-C, cancels the work and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
