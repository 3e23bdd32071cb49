"""Fair shares of free slots between functions with work waiting. Pure.

Handing free slots out one at a time, round robin, to every function that still wants one is
deficit round-robin with a quantum of one message. :func:`share` gives the same result in one
pass rather than one slot at a time (max-min fairness): every function gets what it wants up
to a common level, and the slots left over go one each to the functions that want more, from
``start`` on. Rotating ``start`` between calls makes those odd slots go round as well, so a
function with 50,000 calls waiting and one with 5 both make progress, and no function gets more
than another that wants as much.
"""

from __future__ import annotations

from collections.abc import Sequence


def share(wants: Sequence[int], free: int, start: int = 0) -> list[int]:
    """How many of ``free`` slots each function gets, for ``wants[i]`` slots wanted by function ``i``.

    Returns a list as long as ``wants``: each grant is at most what was wanted, they add up to
    at most ``free``, and to all of it when enough is wanted.
    """
    count = len(wants)
    if free <= 0 or not count:
        return [0] * count
    wanted = [max(0, w) for w in wants]
    if sum(wanted) <= free:
        return wanted
    # The highest common level that fits: functions wanting less get all they want.
    level, left, unmet = 0, free, sorted(w for w in wanted if w > 0)
    for index, want in enumerate(unmet):
        remaining = len(unmet) - index
        if (want - level) * remaining > left:
            level += left // remaining
            break
        left -= (want - level) * remaining
        level = want
    grants = [min(w, level) for w in wanted]
    left = free - sum(grants)
    for offset in range(count):
        if left <= 0:
            break
        index = (start + offset) % count
        if wanted[index] > grants[index]:
            grants[index] += 1
            left -= 1
    return grants
