"""Retry arithmetic, the one home for it: exponential back-off and jitter. No I/O.

The runtime spaces out redeliveries of a message whose handler raised with it, and handlers
(the queue-worker's invocation and callback retries) build their own schedules from it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Mode = Literal["exponential", "full", "equal"]

#: Each mode's spread of a delay: none, 0-100% of it, or 50-100% of it (the AWS names).
JITTER: dict[str, Callable[[float, random.Random], float]] = {
    "exponential": lambda delay, _rng: delay,
    "full": lambda delay, rng: rng.uniform(0.0, delay),
    "equal": lambda delay, rng: delay / 2 + rng.uniform(0.0, delay / 2),
}
#: The values ``backoff`` accepts.
BACKOFF_MODES: tuple[str, ...] = tuple(JITTER)


def exponential_delay(retry: int, *, initial_s: float, max_s: float) -> float:
    """The un-jittered wait before retry number ``retry`` (1 for the first retry).

    ``initial_s`` doubles with each retry and is capped at ``max_s``.
    """
    if retry < 1:
        raise ValueError("retry counts from 1")
    # Past 2**64 the cap has long since won; bounding the exponent keeps floats finite.
    return min(max_s, initial_s * 2.0 ** min(retry - 1, 64))


def jitter(delay_s: float, mode: str, rng: random.Random) -> float:
    """Spread ``delay_s`` by ``mode`` so that retries of a burst do not arrive together."""
    try:
        spread = JITTER[mode]
    except KeyError:
        raise ValueError(f"unknown backoff mode {mode!r}") from None
    return spread(delay_s, rng)


@dataclass(frozen=True, slots=True)
class Backoff:
    """A schedule: ``initial_s`` doubling per retry up to ``max_s``, spread by ``mode``."""

    initial_s: float
    max_s: float
    mode: str = "exponential"

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (1 for the first); ``rng`` is needed only
        for the jittered modes."""
        base = exponential_delay(retry, initial_s=self.initial_s, max_s=self.max_s)
        if self.mode == "exponential":
            return base
        if rng is None:
            raise ValueError(f"backoff mode {self.mode!r} needs a random source")
        return jitter(base, self.mode, rng)
