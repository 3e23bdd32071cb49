from __future__ import annotations

import pytest

from runtime import Ack, Retry, Terminate
from runtime.settle import Action, plan


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (None, Action("ack", reason="ok")),
        (Ack(), Action("ack", reason="ok")),
        (Ack(reason="status 200"), Action("ack", reason="status 200")),
        (Retry(2.5, reason="status 503"), Action("nak", delay_s=2.5, reason="status 503")),
        (Retry(-1.0), Action("nak", delay_s=0.0, reason="retry")),
        (Terminate(reason="undecodable"), Action("term", reason="undecodable")),
    ],
)
def test_each_outcome_maps_to_one_acknowledgement(outcome: object, action: Action) -> None:
    assert plan(outcome) == action  # type: ignore[arg-type]
