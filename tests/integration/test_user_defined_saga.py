"""A saga the engine has never heard of runs end to end, over the real broker and store.

The travel saga (``tests/integration/travel_saga.py``) is defined outside the package.
A live orchestrator process loads it, beside the shipped order saga, through
``SAGA_DEFINITIONS``; its four participants, written with the participant kit, run in
this test's event loop. No engine code knows about it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.client import SagaClient
from orchestrator.dev.processes import ServiceProcess
from orchestrator.saga.state import EventType, SagaState, Status
from orchestrator.settings import DEFAULT_PACKS, Settings
from tests.helpers import delete_topology, run_cli
from tests.integration.travel_saga import (
    REF,
    BookTrip,
    CarsDesk,
    FlightsDesk,
    HotelsDesk,
    PaymentsDesk,
)

pytestmark = pytest.mark.integration


@dataclass
class Trip:
    """The running deployment: an orchestrator process, the four desks, a client."""

    settings: Settings
    client: SagaClient
    flights: FlightsDesk
    hotels: HotelsDesk
    cars: CarsDesk
    payments: PaymentsDesk

    async def book(self, **changes: object) -> tuple[str, SagaState]:
        """Book a trip through the broker; wait until its saga has settled."""
        saga_id = uuid.uuid4().hex
        fields: dict[str, object] = {
            "trip_id": f"trip-{saga_id[:8]}",
            "traveller": "Ada Lovelace",
            "destination": "Lisbon",
            "nights": 3,
            "amount_cents": 84_000,
        }
        await self.client.start(BookTrip.model_validate(fields | changes), saga_id=saga_id)
        return saga_id, await self.client.wait_settled(saga_id, timeout=60)

    async def events(self, saga_id: str) -> list[tuple[EventType, str | None]]:
        """The saga's stored events: (type, step)."""
        return [(e.type, e.step) for c in await self.client.history(saga_id) for e in c.events]


@pytest.fixture
async def trip(settings: Settings, tmp_path: Path) -> AsyncIterator[Trip]:
    """The order pack and the travel saga in one deployment; only travel's services run."""
    deployment = settings.with_(saga_definitions=(*DEFAULT_PACKS, REF))
    orchestrator = ServiceProcess("orchestrator", deployment, log_dir=tmp_path)
    await orchestrator.started()
    desks = (
        FlightsDesk(deployment),
        HotelsDesk(deployment),
        CarsDesk(deployment),
        PaymentsDesk(deployment),
    )
    client = SagaClient(deployment, name="travel-client")
    try:
        for desk in desks:
            await desk.start()
        await client.connect()
        yield Trip(deployment, client, *desks)
    finally:
        await client.close()
        for desk in desks:
            if desk.started:
                await desk.stop()
        orchestrator.stop()
        await delete_topology(deployment)


async def test_a_trip_is_booked_step_by_step(trip: Trip) -> None:
    saga_id, state = await trip.book()

    assert (state.status, state.saga_name, state.reference) == (
        Status.COMPLETED,
        "travel",
        f"trip-{saga_id[:8]}",
    )
    assert [s for t, s in await trip.events(saga_id) if t is EventType.STEP_SUCCEEDED] == [
        "book_flight",
        "book_room",
        "rent_car",
        "charge_card",
    ]
    for desk in (trip.flights, trip.hotels, trip.cars, trip.payments):
        assert desk.records == {saga_id: "booked"}


async def test_a_refused_car_cancels_the_room_then_the_flight(trip: Trip) -> None:
    saga_id, state = await trip.book(car_class="tank")

    assert (state.status, state.failed_step, state.reason) == (
        Status.COMPENSATED,
        "rent_car",
        "no tank to rent",
    )
    undone = [s for t, s in await trip.events(saga_id) if t is EventType.STEP_COMPENSATED]
    assert undone == ["book_room", "book_flight"]
    assert trip.flights.records == trip.hotels.records == {saga_id: "cancelled"}
    assert trip.cars.records == {saga_id: "refused"}
    assert trip.payments.records == {}


async def test_the_cli_starts_a_user_defined_saga_by_name_and_shows_it(
    trip: Trip, tmp_path: Path
) -> None:
    body = tmp_path / "trip.json"
    body.write_text(
        json.dumps(
            {
                "trip_id": "trip-cli",
                "traveller": "Grace Hopper",
                "destination": "Moon",
                "nights": 2,
                "amount_cents": 1,
            }
        )
    )
    saga_id = uuid.uuid4().hex

    code, out, err = await run_cli(
        trip.settings, "start", "travel", str(body), "--saga-id", saga_id
    )
    assert code == 0, err
    assert f"saga {saga_id} started (travel@v1)" in out

    code, out, err = await run_cli(trip.settings, "status", saga_id)
    assert code == 0, err
    assert f"saga {saga_id} (travel): failed" in out
    assert "failure: book_flight: no flight to Moon" in out
    assert trip.flights.records == {saga_id: "refused"}
    assert trip.hotels.records == {}
