"""The load generator's event loop: one epoll and one heap of timers, nothing else.

Hundreds of calls each send a frame every 20 ms and take in what comes back. A Trio task
per socket costs a scheduler pass per wake-up; this loop costs an epoll_wait and a
callback. Times are `time.perf_counter()` seconds, the clock every harness measurement
uses. Timers may run up to a millisecond late (epoll's resolution); `late_max` records by
how much, so a report can show when the harness itself lagged.
"""

from __future__ import annotations

import heapq
import itertools
import select
import socket
from collections.abc import Callable
from time import perf_counter

__all__ = ["Loop"]

MAX_WAIT_SECONDS = 60.0  # epoll's timeout has a limit; a loop with no deadline wakes this often


class Loop:
    """Readers (called when their socket is readable) and timers (called at a time)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # timers due together run in the order added
        self.late_max = 0.0  # the most a timer ran after its time (s)

    def at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._order), callback))

    def read(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `sock` is readable, until `forget(sock)`."""
        self._readers[sock.fileno()] = callback
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def forget(self, sock: socket.socket) -> None:
        if self._readers.pop(sock.fileno(), None) is not None:
            self._epoll.unregister(sock.fileno())

    def run_until(self, deadline: float, done: Callable[[], bool] = lambda: False) -> bool:
        """Run until `deadline` or until `done()`; True if done."""
        timers, readers = self._timers, self._readers
        while True:
            now = perf_counter()
            while timers and timers[0][0] <= now:
                when, _, callback = heapq.heappop(timers)
                self.late_max = max(self.late_max, perf_counter() - when)
                callback()
            if done():
                return True
            if now >= deadline:
                return False
            wake = min(timers[0][0], deadline) if timers else deadline
            timeout = min(max(0.0, wake - perf_counter()), MAX_WAIT_SECONDS)
            for fd, _ in self._epoll.poll(timeout):
                reader = readers.get(fd)
                if reader is not None:
                    reader()
