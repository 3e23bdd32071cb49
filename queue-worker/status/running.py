"""Which calls to record ``running``: those still under way :data:`RUNNING_AFTER_S` after they
began. Pure: no I/O, and the clock is passed in.

A quicker call goes from ``queued`` straight to its outcome, which halves the status writes (and
the server's work) at high rates. The calls not yet old enough wait in one dictionary, in the
order they began, so one wake-up for the oldest serves them all: a timer per call cost 0.56 us
(``call_later`` and ``cancel`` on uvloop) against 0.06 us for a dictionary's insert and pop.
"""

from __future__ import annotations

from typing import NamedTuple

#: How long a call runs before its status says ``running``.
RUNNING_AFTER_S = 0.25


class Began(NamedTuple):
    """A call under way, as :meth:`Running.due` hands it back."""

    call_id: str
    function: str
    attempt: int


class Running:
    """The calls under way that are not yet recorded ``running``."""

    def __init__(self, after_s: float = RUNNING_AFTER_S) -> None:
        self.after_s = after_s
        #: By call id, in the order they began: when, the function and the attempt.
        self._began: dict[str, tuple[float, str, int]] = {}

    def __len__(self) -> int:
        return len(self._began)

    def began(self, call_id: str, function: str, attempt: int, now: float) -> None:
        """Note a call (a call already noted keeps its first start: its attempt is still running).

        ``now`` must not go back: the order calls are noted in is the order they come due."""
        if call_id not in self._began:
            self._began[call_id] = (now, function, attempt)

    def ended(self, call_id: str) -> None:
        """Forget a call whose outcome is being recorded."""
        if self._began:
            self._began.pop(call_id, None)

    def due(self, now: float) -> tuple[list[Began], float | None]:
        """The calls begun ``after_s`` ago or more, taken out, and when the next one comes due
        (``None`` when none is left). The first call still young ends the search."""
        found: list[Began] = []
        next_at: float | None = None
        for call_id, (began, function, attempt) in self._began.items():
            if began + self.after_s > now:
                next_at = began + self.after_s
                break
            found.append(Began(call_id, function, attempt))
        for call in found:
            del self._began[call.call_id]
        return found, next_at
