"""A small epoll event loop: fd readers, monotonic timers, and signals through a wakeup fd.

The supervisor and SAM both watch children with it: one pidfd per child, the children's ready
pipes and stderr pipes, and the signal wakeup socket all sit in one ``epoll``. Timers are a heap
whose earliest deadline becomes the epoll timeout (a timerfd would add a syscall per re-arm and
``os.timerfd_create`` needs Python 3.13), so an idle loop sleeps in the kernel until something happens.

Callbacks must not re-enter the loop; they record what happened and return. Blocking helpers
(``run_until``) are called from the top level only.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterable
from types import FrameType

Callback = Callable[[], None]


class Timer:
    """A pending call; ``cancel()`` makes it a no-op."""

    __slots__ = ("callback", "cancelled", "when_s")

    def __init__(self, when_s: float, callback: Callback) -> None:
        self.when_s = when_s
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """epoll over file descriptors plus a heap of monotonic timers."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._signal_sock: socket.socket | None = None
        self._signal_peer: socket.socket | None = None
        self._old_wakeup_fd = -1
        self._old_handlers: dict[int, object] = {}

    # -- readers and timers ---------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callback) -> None:
        """Calls ``callback()`` whenever ``fd`` is readable (or hung up)."""
        if fd in self._readers:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        """Stops watching ``fd`` (before the caller closes it)."""
        if self._readers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def call_later(self, delay_s: float, callback: Callback) -> Timer:
        """Calls ``callback()`` once, ``delay_s`` seconds from now."""
        timer = Timer(time.monotonic() + max(0.0, delay_s), callback)
        heapq.heappush(self._timers, (timer.when_s, next(self._seq), timer))
        return timer

    def call_every(self, interval_s: float, callback: Callback) -> Callable[[], None]:
        """Calls ``callback()`` every ``interval_s`` seconds; returns a function that stops it."""
        state: dict[str, Timer] = {}

        def tick() -> None:
            state["t"] = self.call_later(interval_s, tick)
            callback()

        state["t"] = self.call_later(interval_s, tick)
        return lambda: state["t"].cancel()

    # -- signals --------------------------------------------------------------------------
    def add_signal_handler(self, signals: Iterable[int], callback: Callable[[int], None]) -> None:
        """Delivers the given signals to ``callback(signum)`` from the loop (main thread only).

        The Python-level handler does nothing; the interpreter writes the signal number to the
        wakeup socket, and the loop reads it like any other event, so no work runs in signal context.
        """
        if self._signal_sock is None:
            self._signal_sock, self._signal_peer = socket.socketpair()
            self._signal_sock.setblocking(False)
            self._signal_peer.setblocking(False)
            self._old_wakeup_fd = signal.set_wakeup_fd(self._signal_peer.fileno(), warn_on_full_buffer=False)
        wanted = set(signals)
        sock = self._signal_sock

        def on_wakeup() -> None:
            try:
                data = sock.recv(256)
            except BlockingIOError:
                return
            for signum in data:
                if signum in wanted:
                    callback(signum)

        def ignore(_signum: int, _frame: FrameType | None) -> None:
            return None

        for signum in wanted:
            self._old_handlers.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, ignore)
        self.add_reader(sock.fileno(), on_wakeup)

    def _restore_signals(self) -> None:
        for signum, handler in self._old_handlers.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(signum, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()
        if self._signal_sock is not None and self._signal_peer is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._old_wakeup_fd)
            self.remove_reader(self._signal_sock.fileno())
            self._signal_sock.close()
            self._signal_peer.close()
            self._signal_sock = self._signal_peer = None

    # -- running --------------------------------------------------------------------------
    def next_timeout_s(self, limit_s: float | None) -> float | None:
        """Seconds until the earliest live timer, bounded by ``limit_s`` (None = no bound)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return limit_s
        wait = max(0.0, self._timers[0][0] - time.monotonic())
        return wait if limit_s is None else min(wait, limit_s)

    def run_once(self, max_wait_s: float | None = None) -> None:
        """Waits for at most ``max_wait_s`` (None = until an event), then runs what is due."""
        timeout = self.next_timeout_s(max_wait_s)
        try:
            events = self._epoll.poll(-1 if timeout is None else timeout)
        except InterruptedError:
            events = []
        for fd, _mask in events:
            callback = self._readers.get(fd)
            if callback is not None:
                callback()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def run_until(self, done: Callable[[], bool], timeout_s: float | None = None) -> bool:
        """Runs the loop until ``done()`` is true (returns True) or ``timeout_s`` passes (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done():
            if deadline is None:
                self.run_once(None)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return done()
            self.run_once(left)
        return True

    def close(self) -> None:
        """Restores signal handlers and closes the epoll fd (watched fds belong to their owners)."""
        self._restore_signals()
        self._readers.clear()
        self._timers.clear()
        with contextlib.suppress(OSError):
            self._epoll.close()


def set_nonblocking(fd: int) -> None:
    """O_NONBLOCK on ``fd`` (pipes read from the loop must never block it)."""
    os.set_blocking(fd, False)
