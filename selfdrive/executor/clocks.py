"""The time a run counts its deadline in, and how it waits between verification attempts.

A live run reads the monotonic clock and sleeps. The testing kit runs the same loop on
a clock that records each pause instead of sleeping, and that a fake command which
"ran until its time limit" moves forward by that limit: a simulated run hits its
timeout where a real one would, without taking the time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class RunClock(Protocol):
    """Seconds on a monotonic scale, and the pause between verification attempts."""

    def now(self) -> float: ...

    def pause(self, seconds: float) -> None: ...


class RealClock:
    """``time.monotonic`` and ``time.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


#: The clock of every live run.
REAL_CLOCK = RealClock()


class RecordingClock:
    """Real time plus the time a simulation pretended to spend.

    ``paused`` lists the pauses between verification attempts, in order (not slept);
    :meth:`advance` counts the time a fake command took without taking it.
    """

    def __init__(self) -> None:
        self.paused: list[float] = []
        self._skipped = 0.0
        self._lock = threading.Lock()  # fan-out answers from several threads

    def now(self) -> float:
        with self._lock:
            return time.monotonic() + self._skipped

    def pause(self, seconds: float) -> None:
        with self._lock:
            self.paused.append(seconds)
            self._skipped += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._skipped += seconds
