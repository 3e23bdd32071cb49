"""Adaptive concurrency: how many calls one function may have at once, learnt from its answers. Pure.

The algorithm is loss-based AIMD, the family of TCP's congestion control and of the
``AIMDLimit`` in Netflix's concurrency-limits, with the level of the last overload remembered,
as TCP BIC does:

- **Overload** (the function answered 429, or the gateway 503 "no endpoints"): the limit drops
  to the number of calls that were running when the function refused, minus one, which is what
  it was seen to hold (the refusals of one burst each report the level they met, and the lowest
  wins); never by more than half at once, and never below one.
- **Growth**: after a window of successes (as many as the limit) that found the limit full,
  the limit grows by a quarter, up to one below the level that last overloaded.
- **Probe**: at that level it waits ``probe_interval_s``, then tries one more. A function that
  can still take only as many answers one 429 per probe; one that has scaled up takes it, and
  growth resumes from there, so a function scaled from 8 to 32 replicas is followed within a
  few windows of the next probe.

Successes that did not find the limit full (there was not enough work to fill it) say nothing
about the function's capacity, so they change nothing. Latency-based limits (Vegas, the gradient
limit) cannot see this kind of capacity: a function at its limit answers 429 at once rather than
slowly, so a rejected call is the only signal there is.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Where a function's limit starts: low, as TCP's slow start does, and grown within windows.
INITIAL_LIMIT = 4
#: Growth per window of successes, as a fraction of the limit (at least one).
GROWTH = 0.25
#: How long the limit stays one below the level that last overloaded before trying it again.
PROBE_INTERVAL_S = 1.0


@dataclass(slots=True)
class AdaptiveLimit:
    """The concurrency limit of one function, between 1 and ``maximum``."""

    maximum: int
    limit: int = INITIAL_LIMIT
    probe_interval_s: float = PROBE_INTERVAL_S
    #: The level that last overloaded, or ``None`` when none has since the last probe.
    ceiling: int | None = None
    #: Successes at a full limit since the limit last changed.
    good: int = 0
    changed_at: float = 0.0

    def __post_init__(self) -> None:
        self.limit = max(1, min(self.limit, self.maximum))

    def succeeded(self, running: int, now: float) -> None:
        """A call finished without overload while ``running`` calls (itself included) ran."""
        if running < self.limit:
            return
        self.good += 1
        if self.ceiling is not None and self.limit + 1 >= self.ceiling:
            if now - self.changed_at >= self.probe_interval_s:
                self.ceiling = None
                self._set(self.limit + 1, now)
            return
        if self.good >= self.limit:
            grown = self.limit + max(1, int(self.limit * GROWTH))
            if self.ceiling is not None:
                grown = min(grown, self.ceiling - 1)
            self._set(grown, now)

    def overloaded(self, running: int, now: float) -> None:
        """The function refused a call while ``running`` calls (the refused one included) ran."""
        # Several refusals of one burst each report the level they met: the lowest one counts.
        lowered = max(1, min(self.limit, max(running - 1, self.limit // 2)))
        self.ceiling = lowered + 1
        # Unchanged (at one already, say): the next probe still waits its interval again.
        self._set(lowered, now)

    def _set(self, limit: int, now: float) -> None:
        self.limit = max(1, min(limit, self.maximum))
        self.good = 0
        self.changed_at = now
