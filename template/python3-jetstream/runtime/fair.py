"""Fair shares of free slots between functions with work waiting: deficit round-robin. Pure.

Free slots are dealt in turn to the functions that want more, at most ``quantum`` messages per
function per turn, starting after the function served last, and round again while slots are
left and someone still wants them. Over time every function with work waiting gets as many
slots as every other (a function with 50,000 calls waiting and one with 5 both make progress),
and one pull request brings up to ``quantum`` messages at once, so a thousand functions with
work cost a pull request per ``quantum`` messages, not one per message.

The functions are visited lazily (``want(i)`` is asked only of those reached), so a deal costs
what it hands out, not the number of functions.
"""

from __future__ import annotations

from collections.abc import Callable


def deal(count: int, want: Callable[[int], int], free: int, start: int, quantum: int) -> tuple[dict[int, int], int]:
    """Deal ``free`` slots between ``count`` functions, function ``i`` wanting ``want(i)``.

    Returns the grants by index (only those above zero) and where the next deal should start:
    just after the last function this one served, so the turn passes on.
    """
    grants: dict[int, int] = {}
    if count <= 0 or free <= 0:
        return grants, start % max(1, count)
    quantum = max(1, quantum)
    left, next_start, first = free, start % count, start % count
    wanting = True
    while left and wanting:
        wanting = False
        for offset in range(count):
            index = (first + offset) % count
            more = want(index) - grants.get(index, 0)
            if more <= 0:
                continue
            given = min(more, quantum, left)
            grants[index] = grants.get(index, 0) + given
            left -= given
            next_start = (index + 1) % count
            wanting = wanting or more > given
            if not left:
                break
    return grants, next_start
