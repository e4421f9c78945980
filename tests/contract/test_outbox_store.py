"""The ``OutboxStore`` port's contract, run against every adapter: the relay sees the
commits whose outbox is not known to be published, and only those."""

from __future__ import annotations

from tests.contract.support import Store, at, commit, entry

# --- pending outboxes ----------------------------------------------------------------


async def test_a_commit_with_nothing_to_send_is_never_pending(store: Store) -> None:
    await store.append(commit(version=1))

    assert await store.undispatched(older_than=at(1000), limit=10) == []
    assert await store.next_undispatched() is None


async def test_pending_outboxes_are_those_stored_by_the_time_given_oldest_first(
    store: Store,
) -> None:
    for saga_id, seconds in (("s3", 3), ("s1", 1), ("s2", 2), ("s9", 9)):
        await store.append(commit(saga_id, outbox=(entry(),), created_at=at(seconds)))

    found = await store.undispatched(older_than=at(3), limit=10)

    assert [p.commit.saga_id for p in found] == ["s1", "s2", "s3"]


async def test_a_pending_outbox_is_the_whole_commit_with_no_failed_attempt(store: Store) -> None:
    stored = commit(outbox=(entry(1), entry(2)), deadline=at(30), meta={"instance": "a"})
    await store.append(stored)

    [pending] = await store.undispatched(older_than=at(100), limit=10)

    assert (pending.commit, pending.attempts) == (stored, 0)


async def test_undispatched_returns_at_most_limit(store: Store) -> None:
    for n in range(5):
        await store.append(commit(f"s{n}", outbox=(entry(),), created_at=at(n)))

    found = await store.undispatched(older_than=at(100), limit=2)

    assert [p.commit.saga_id for p in found] == ["s0", "s1"]


async def test_dispatched_outboxes_are_no_longer_pending(store: Store) -> None:
    for saga_id in ("s1", "s2", "s3"):
        await store.append(commit(saga_id, outbox=(entry(),)))

    await store.mark_dispatched(["s1:1", "s3:1", "unknown:7"])
    await store.mark_dispatched([])

    assert [p.commit.id for p in await store.undispatched(older_than=at(100), limit=10)] == ["s2:1"]


async def test_pending_outboxes_of_the_named_sagas_only(store: Store) -> None:
    await store.append(commit("t", outbox=(entry(),), created_at=at(1)))
    await store.append(commit("o", saga_name="order", outbox=(entry(),), created_at=at(2)))

    found = await store.undispatched(older_than=at(100), limit=10, saga_names=["order"])

    assert [p.commit.id for p in found] == ["o:1"]
    assert await store.undispatched(older_than=at(100), limit=10, saga_names=[]) == []
    assert await store.next_undispatched(saga_names=["order"]) == at(2)
    assert await store.next_undispatched(saga_names=["nobody"]) is None


async def test_next_undispatched_is_when_the_oldest_pending_outbox_was_stored(
    store: Store,
) -> None:
    await store.append(commit("s2", outbox=(entry(),), created_at=at(20)))
    await store.append(commit("s1", outbox=(entry(),), created_at=at(10)))

    assert await store.next_undispatched() == at(10)
    await store.mark_dispatched(["s1:1"])
    assert await store.next_undispatched() == at(20)
    await store.mark_dispatched(["s2:1"])
    assert await store.next_undispatched() is None


# --- failing outboxes ------------------------------------------------------------------


async def test_a_deferred_outbox_counts_its_attempts_and_waits_behind_newer_ones(
    store: Store,
) -> None:
    await store.append(commit("bad", outbox=(entry(),), created_at=at(1)))
    await store.append(commit("good", outbox=(entry(),), created_at=at(2)))

    await store.defer_outbox("bad:1", until=at(50), attempts=3, error="Unroutable: no queue")

    assert [p.commit.id for p in await store.undispatched(older_than=at(10), limit=1)] == ["good:1"]
    assert [
        (p.commit.id, p.attempts) for p in await store.undispatched(older_than=at(50), limit=10)
    ] == [
        ("good:1", 0),
        ("bad:1", 3),
    ]
    await store.mark_dispatched(["good:1"])
    assert await store.next_undispatched() == at(50)


async def test_a_confirmed_outbox_is_not_made_pending_again_by_a_late_deferral(
    store: Store,
) -> None:
    await store.append(commit(outbox=(entry(),)))
    await store.mark_dispatched(["s1:1"])

    await store.defer_outbox("s1:1", until=at(50), attempts=1, error="x")
    await store.defer_outbox("unknown:1", until=at(50), attempts=1, error="x")

    assert await store.undispatched(older_than=at(100), limit=10) == []
    assert await store.next_undispatched() is None


async def test_a_parked_outbox_is_no_longer_pending(store: Store) -> None:
    await store.append(commit("bad", outbox=(entry(),), created_at=at(1)))
    await store.append(commit("good", outbox=(entry(),), created_at=at(2)))

    await store.park_outbox("bad:1", reason="Unroutable: no queue", attempts=8)

    assert [p.commit.id for p in await store.undispatched(older_than=at(100), limit=10)] == [
        "good:1"
    ]
    assert await store.next_undispatched() == at(2)


async def test_a_confirmed_outbox_is_not_parked(store: Store) -> None:
    await store.append(commit(outbox=(entry(),)))
    await store.mark_dispatched(["s1:1"])

    await store.park_outbox("s1:1", reason="late", attempts=8)

    assert await store.parked() == []
