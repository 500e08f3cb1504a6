"""Ctrl-C and SIGTERM that always reach :func:`suite.app.cli.main`.

Python raises a signal's exception wherever the main thread happens to run
Python code next, and that can be a finaliser (``__del__``, a weakref
callback run by the garbage collector): there CPython prints "Exception
ignored in ..." and drops it, so a run keeps training after Ctrl-C.  The
:class:`InterruptGuard` closes that hole twice over:

* ``sys.unraisablehook``: a dropped ``KeyboardInterrupt`` / :class:`Terminated`
  wakes the watchdog, which delivers it again at once (``_thread.interrupt_main``);
* a watchdog thread re-delivers it every ``redeliver_s`` seconds until ``main``
  has caught it (:meth:`InterruptGuard.caught`), for any other place that
  might swallow it.

SIGTERM is raised as :class:`Terminated` (a ``BaseException``) so every
``with``/``finally`` cleanup runs as for Ctrl-C.

Once ``main`` has handled an interrupt (:meth:`InterruptGuard.caught`), the
guard also calls :func:`forget_handled_interrupt`: CPython (3.11 measured) remembers a KeyboardInterrupt that left any *string*
``exec``/``eval`` (a dataclass or namedtuple being built, for one) even when
a caller catches it later, and under ``python -m`` then ends the process by
SIGINT (-2) after ``main`` returned 130.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from types import TracebackType
from typing import Any, Callable


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread (like KeyboardInterrupt for Ctrl-C).

    A BaseException, so ``except Exception`` handlers let it through and every
    ``with``/``finally`` cleanup (hidden run directories, cache temporaries,
    worker processes) runs before ``main`` returns 143.
    """


_INTERRUPTS = (KeyboardInterrupt, Terminated)


def forget_handled_interrupt() -> None:
    """Clear CPython's "KeyboardInterrupt left a string exec" flag (see the module docstring).

    The interpreter resets that flag at the start of every string evaluation,
    so evaluating an empty one is enough; call it only once the interrupt is
    handled, so that a genuinely unhandled one still ends the process by SIGINT.
    """
    exec("None", {})  # a constant string: its only effect is the reset


class InterruptGuard:
    """Context manager for the CLI's main thread; see the module docstring.

    Installs handlers only from the main thread and only over the default
    dispositions (an ignored signal or a handler set by an embedding program
    is left alone); everything is restored on exit.
    """

    def __init__(self, redeliver_s: float = 10.0) -> None:
        self.redeliver_s = float(redeliver_s)
        self._pending: int | None = None  # signal number not yet caught by main
        self._done = threading.Event()
        self._lock = threading.Lock()  # no re-delivery once ``caught`` has returned
        self._wake = threading.Event()  # a finaliser dropped the interrupt: re-deliver now
        self._previous: dict[int, Any] = {}
        self._previous_hook: Callable[[Any], None] | None = None
        self._watchdog: threading.Thread | None = None

    # -- signal handlers (run in the main thread) --------------------------
    def _on_sigint(self, signum: int, frame: Any) -> None:
        if not self._done.is_set():  # a late re-delivery after ``caught`` is dropped
            self._arm(signum)
            raise KeyboardInterrupt()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if not self._done.is_set():
            self._arm(signum)
            raise Terminated()

    def _arm(self, signum: int) -> None:
        if self._pending is None:
            self._pending = signum
            self._watchdog = threading.Thread(target=self._redeliver_until_caught, name="interrupt-watchdog",
                                              daemon=True)
            self._watchdog.start()

    def _redeliver_until_caught(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self.redeliver_s)
            self._wake.clear()
            self._redeliver()

    def _redeliver(self) -> None:
        with self._lock:
            if self._pending is not None and not self._done.is_set():
                _thread.interrupt_main(self._pending)

    def _unraisable(self, unraisable: Any) -> None:
        if self._previous_hook is not None:
            self._previous_hook(unraisable)
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, _INTERRUPTS):
            self._wake.set()  # from the watchdog thread, so it lands after this hook has returned

    # -- lifecycle ------------------------------------------------------------
    def caught(self) -> None:
        """``main`` has the interrupt in hand: stop re-delivering it, and let it not end the process by SIGINT."""
        with self._lock:
            self._pending = None
            self._done.set()
        self._wake.set()
        forget_handled_interrupt()

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum, handler, default in ((signal.SIGINT, self._on_sigint, signal.default_int_handler),
                                         (signal.SIGTERM, self._on_sigterm, signal.SIG_DFL)):
            current = signal.getsignal(signum)
            if current is default:
                self._previous[signum] = current
                signal.signal(signum, handler)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.caught()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._previous_hook is not None:
            sys.unraisablehook = self._previous_hook
            self._previous_hook = None
