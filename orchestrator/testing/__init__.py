"""Test your sagas in memory: scripted participants, no broker, no MongoDB, no sleeps.

Like ``structlog.testing`` and ``temporalio.testing``, this ships with the package so a
team tests its own saga definitions with the real runtime::

    from orchestrator.testing import SagaTestKit, refuse

    async def test_a_refused_car_undoes_the_hotel_then_the_flight() -> None:
        kit = SagaTestKit(TRAVEL)
        kit.script(BookCar, refuse("no cars left"))
        saga = await kit.start(BookTrip(trip_id="t-1", traveller="ada"))
        assert saga.status == "compensated"
        assert saga.compensated == ["book_hotel", "book_flight"]

Participants reply with the step's expected reply unless scripted otherwise:
:func:`reply`, :func:`refuse`, :func:`no_reply` (then ``await kit.advance(seconds)``
fires the deadline), :func:`late` and :func:`duplicate`.
"""

from orchestrator.store.memory import InMemorySagaStore
from orchestrator.testing.bus import InMemoryOutboxPublisher, SentMessage
from orchestrator.testing.clock import FakeClock
from orchestrator.testing.kit import SagaTestKit
from orchestrator.testing.result import DeadLetter, SagaResult
from orchestrator.testing.script import (
    Behaviour,
    KitError,
    ScriptError,
    build_reply,
    duplicate,
    late,
    no_reply,
    refuse,
    reply,
)

__all__ = [
    "Behaviour",
    "DeadLetter",
    "FakeClock",
    "InMemoryOutboxPublisher",
    "InMemorySagaStore",
    "KitError",
    "SagaResult",
    "SagaTestKit",
    "ScriptError",
    "SentMessage",
    "build_reply",
    "duplicate",
    "late",
    "no_reply",
    "refuse",
    "reply",
]
