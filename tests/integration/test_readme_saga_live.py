"""The README's example saga, participant and all, on the real broker and store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts import Message
from orchestrator.client import SagaClient
from orchestrator.runtime.service import OrchestratorService
from orchestrator.saga.state import SagaState, Status
from orchestrator.settings import Settings
from participants.kit import ParticipantService
from tests.helpers import delete_topology
from tests.readme import REF, example_dir

pytestmark = pytest.mark.integration

example_dir()
from holiday_saga.definition import BookHoliday, BookSeat, NoSeat, SeatBooked  # noqa: E402
from holiday_saga.hotel import Hotel  # noqa: E402


class Flight(ParticipantService):
    """The README's "flight service written like the hotel": no seats on long stays."""

    service = "flight"

    async def setup(self) -> None:
        self.on_command(BookSeat, self.book)
        self.consume("flight.commands", self.handle_command)

    async def book(self, saga_id: str, cmd: BookSeat) -> Message:
        if cmd.booking_id.startswith("full-"):
            return NoSeat(booking_id=cmd.booking_id, reason="flight full")
        return SeatBooked(booking_id=cmd.booking_id)


@pytest.fixture
async def holiday(settings: Settings) -> AsyncIterator[tuple[SagaClient, Hotel]]:
    """The orchestrator serving only the README's saga, its two participants, a client."""
    deployment = settings.with_(saga_definitions=(REF,))
    services = [OrchestratorService(deployment), Hotel(deployment), Flight(deployment)]
    client = SagaClient(deployment, name="readme-client")
    try:
        for service in services:
            await service.start()
        await client.connect()
        yield client, services[1]  # type: ignore[misc]
    finally:
        await client.close()
        for service in services:
            if service.started:
                await service.stop()
        await delete_topology(deployment)


async def _book(client: SagaClient, booking_id: str, nights: int) -> tuple[str, SagaState]:
    saga_id = uuid.uuid4().hex
    await client.start(BookHoliday(booking_id=booking_id, nights=nights), saga_id=saga_id)
    return saga_id, await client.wait_settled(saga_id, timeout=60)


async def _room(hotel: Hotel, saga_id: str) -> dict[str, Any] | None:
    return await hotel.db["rooms"].find_one({"_id": saga_id})


async def test_a_holiday_is_booked(holiday: tuple[SagaClient, Hotel]) -> None:
    client, hotel = holiday

    saga_id, state = await _book(client, "b-1", nights=3)

    assert (state.status, state.reference) == (Status.COMPLETED, "b-1")
    assert await _room(hotel, saga_id) == {"_id": saga_id, "nights": 3}


async def test_a_full_flight_releases_the_room(holiday: tuple[SagaClient, Hotel]) -> None:
    client, hotel = holiday

    saga_id, state = await _book(client, "full-1", nights=3)

    assert (state.status, state.failed_step) == (Status.COMPENSATED, "book_seat")
    assert await _room(hotel, saga_id) is None


async def test_a_stay_too_long_is_refused_by_the_hotel(holiday: tuple[SagaClient, Hotel]) -> None:
    client, hotel = holiday

    saga_id, state = await _book(client, "b-2", nights=15)

    assert (state.status, state.reason) == (Status.FAILED, "at most 14 nights")
    assert await _room(hotel, saga_id) is None
