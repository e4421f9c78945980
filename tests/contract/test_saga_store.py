"""The ``SagaStore`` port's contract, one test per promised behaviour, run against every
adapter: ``InMemorySagaStore`` and ``MongoSagaStore`` (a real MongoDB-protocol server over
TCP). An adapter that passes this suite and the other ports' suites beside it
(``test_outbox_store``, ``test_deadline_store``, ``test_parked_work``,
``test_history_retention``) can carry the runtime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import MalformedMessage
from orchestrator.errors import ConcurrencyConflict, DuplicateMessage
from orchestrator.saga.state import Status
from tests.contract.support import Store, at, commit, entry, step_started

# --- append and load ---------------------------------------------------------------


async def test_an_unknown_saga_loads_empty_at_version_zero(store: Store) -> None:
    state = await store.load("nobody")

    assert (state.saga_id, state.version, state.status) == ("nobody", 0, None)
    assert await store.history("nobody") == []


async def test_load_replays_the_appended_commits(store: Store) -> None:
    await store.append(commit(version=1))
    await store.append(commit(version=2, events=(step_started("book_flight", at(30)),)))

    state = await store.load("s1")

    assert (state.version, state.status, state.saga_name, state.saga_version) == (
        2,
        Status.RUNNING,
        "travel",
        2,
    )
    assert (state.reference, state.step, state.deadline) == ("trip-1", "book_flight", at(30))
    assert state.processed == {"msg-1", "msg-2"}
    assert state.data == {"trip_id": "trip-1", "nights": 3}


async def test_load_replays_in_version_order_whatever_the_order_of_appends(
    store: Store,
) -> None:
    await store.append(commit(version=2, events=(step_started("book_flight", at(30)),)))
    await store.append(commit(version=1))

    state = await store.load("s1")

    assert (state.version, state.step, state.status) == (2, "book_flight", Status.RUNNING)


async def test_history_returns_every_field_of_every_commit_oldest_first(store: Store) -> None:
    first = commit(version=1, outbox=(entry(1), entry(2)), meta={"instance": "a"})
    second = commit(
        version=2,
        events=(step_started("book_flight", at(30)),),
        deadline=at(30),
        status="compensating",
    )
    await store.append(second)
    await store.append(first)

    assert await store.history("s1") == [first, second]


async def test_datetimes_read_back_in_utc_to_the_millisecond(store: Store) -> None:
    precise = datetime(2030, 1, 1, 13, 0, 0, 123_456, tzinfo=UTC)
    await store.append(commit(created_at=precise, deadline=precise))

    [stored] = await store.history("s1")

    assert stored.created_at == stored.deadline == precise.replace(microsecond=123_000)
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == timedelta(0)


async def test_a_taken_version_is_a_concurrency_conflict(store: Store) -> None:
    await store.append(commit(version=1, causation_id="a"))

    with pytest.raises(ConcurrencyConflict, match="version 1 is taken"):
        await store.append(commit(version=1, causation_id="b"))


async def test_a_processed_causing_message_is_a_duplicate(store: Store) -> None:
    await store.append(commit(version=1, causation_id="a"))

    with pytest.raises(DuplicateMessage, match="already processed"):
        await store.append(commit(version=2, causation_id="a"))


async def test_a_duplicate_for_a_taken_version_is_a_duplicate_not_a_conflict(
    store: Store,
) -> None:
    # A redelivered message decided again on the old state: nothing to retry, just ack.
    await store.append(commit(version=1, causation_id="a"))

    with pytest.raises(DuplicateMessage):
        await store.append(commit(version=1, causation_id="a"))


async def test_a_refused_append_stores_nothing(store: Store) -> None:
    await store.append(commit(version=1, causation_id="a"))
    for refused in (commit(version=1, causation_id="b"), commit(version=2, causation_id="a")):
        with pytest.raises((ConcurrencyConflict, DuplicateMessage)):
            await store.append(refused)

    assert [c.causation_id for c in await store.history("s1")] == ["a"]
    assert (await store.load("s1")).version == 1


async def test_versions_and_causing_messages_are_per_saga(store: Store) -> None:
    await store.append(commit("s1", causation_id="same"))
    await store.append(commit("s2", causation_id="same"))

    assert (await store.load("s1")).version == (await store.load("s2")).version == 1


# --- append_many (group commit) -----------------------------------------------------


async def test_append_many_stores_each_commit_on_its_own(store: Store) -> None:
    """A duplicate and a conflict beside good commits fail alone, each with its own
    error, in the order given; the good ones are stored, nothing is overwritten."""
    await store.append(commit("dup", causation_id="a"))
    await store.append(commit("taken", causation_id="a"))

    outcomes = await store.append_many(
        [
            commit("good-1"),
            commit("dup", causation_id="a"),  # the same message again: a redelivery
            commit("taken", causation_id="b"),  # version 1 taken by another message
            commit("good-2"),
        ]
    )

    assert [type(o).__name__ for o in outcomes] == [
        "NoneType",
        "DuplicateMessage",
        "ConcurrencyConflict",
        "NoneType",
    ]
    assert [c.id for c in await store.history("good-1") + await store.history("good-2")] == [
        "good-1:1",
        "good-2:1",
    ]
    assert [c.causation_id for c in await store.history("taken")] == ["a"]
    assert [c.causation_id for c in await store.history("dup")] == ["a"]


async def test_append_many_sees_the_commits_before_it_in_the_same_batch(store: Store) -> None:
    """Two handlers racing for one version in one batch: the first wins, the second is a
    conflict; the same message twice in one batch is stored once."""
    outcomes = await store.append_many(
        [
            commit("race", causation_id="a"),
            commit("race", causation_id="b"),
            commit("twice", causation_id="m"),
            commit("twice", version=2, causation_id="m"),
        ]
    )

    assert outcomes[0] is None
    assert isinstance(outcomes[1], ConcurrencyConflict)
    assert outcomes[2] is None
    assert isinstance(outcomes[3], DuplicateMessage)
    assert [c.causation_id for c in await store.history("race")] == ["a"]
    assert [c.version for c in await store.history("twice")] == [1]


async def test_append_many_of_nothing_stores_nothing(store: Store) -> None:
    assert await store.append_many([]) == []


async def test_a_commit_the_store_cannot_encode_is_malformed_and_the_others_are_stored(
    store: Store,
) -> None:
    """A number beyond 64 bits (BSON's limit) is bad input for the dead-letter queue, not
    a store failure of the whole batch."""
    huge = commit("huge", meta={"amount": 10**30})

    outcomes = await store.append_many([commit("good"), huge])

    assert outcomes[0] is None
    assert isinstance(outcomes[1], MalformedMessage)
    assert await store.history("huge") == []
    assert [c.id for c in await store.history("good")] == ["good:1"]
    with pytest.raises(MalformedMessage):
        await store.append(huge)
