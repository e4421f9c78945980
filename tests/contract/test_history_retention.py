"""The ``HistoryRetention`` port's contract, run against every adapter: finished sagas
are removed after a retention time, leaving a tombstone; sagas in flight, parked sagas
and sagas with pending or parked work never are."""

from __future__ import annotations

from orchestrator.saga.commits import FinishedSaga
from tests.contract.support import Store, at, commit, entry

CUTOFF = at(1000)


async def finished(store: Store, saga_id: str, *, versions: int = 2, **last: object) -> None:
    """A saga of ``versions`` commits whose last one completed it at ``at(versions)``."""
    for version in range(1, versions):
        await store.append(commit(saga_id, version))
    await store.append(commit(saga_id, versions, **{"status": "completed", **last}))


async def prunable_ids(store: Store) -> list[str]:
    page = await store.prunable(finished_before=CUTOFF, limit=100)
    return [s.saga_id for s in page.sagas]


async def test_sagas_that_finished_before_the_time_are_prunable_oldest_first(
    store: Store,
) -> None:
    await finished(store, "b", versions=3, status="failed")
    await finished(store, "a", versions=2)
    await finished(store, "c", versions=4, status="compensated")
    await finished(store, "late", versions=2, created_at=CUTOFF)

    page = await store.prunable(finished_before=CUTOFF, limit=100)

    assert [(s.saga_id, s.version, s.status, s.finished_at) for s in page.sagas] == [
        ("a", 2, "completed", at(2)),
        ("b", 3, "failed", at(3)),
        ("c", 4, "compensated", at(4)),
    ]
    assert page.sagas[0] == FinishedSaga(
        saga_id="a", saga_name="travel", version=2, status="completed", finished_at=at(2)
    )
    assert (page.cursor, page.scanned) == (None, 3)


async def test_sagas_in_flight_or_parked_for_an_operator_are_never_prunable(
    store: Store,
) -> None:
    await store.append(commit("running"))
    await store.append(commit("parked", status="compensation_failed"))
    await finished(store, "resumed")  # then an operator's commit after the end
    await store.append(commit("resumed", 3, status="compensating"))

    assert await prunable_ids(store) == []


async def test_a_finished_saga_with_an_unconfirmed_outbox_waits_until_it_is_confirmed(
    store: Store,
) -> None:
    await finished(store, "s", outbox=(entry(),))

    assert await prunable_ids(store) == []
    await store.mark_dispatched(["s:2"])
    assert await prunable_ids(store) == ["s"]


async def test_a_finished_saga_with_a_deadline_not_cleared_waits_until_it_is(
    store: Store,
) -> None:
    await store.append(commit("s", 1, deadline=at(30)))
    await store.append(commit("s", 2, status="completed"))

    assert await prunable_ids(store) == []
    await store.clear_deadlines(["s:1"])
    assert await prunable_ids(store) == ["s"]


async def test_a_finished_saga_with_parked_work_waits_for_the_operator(store: Store) -> None:
    await finished(store, "s", outbox=(entry(),))
    await store.park_outbox("s:2", reason="Unroutable: no queue", attempts=8)

    assert await prunable_ids(store) == []
    await store.drop_parked("s:2")
    assert await prunable_ids(store) == ["s"]


async def test_a_saga_whose_parked_deadline_it_moved_past_is_prunable_once_finished(
    store: Store,
) -> None:
    """The parked deadline was superseded (the saga resumed and finished): nothing of
    it is left to wait for."""
    await store.append(commit("s", 1, deadline=at(10)))
    await store.park_deadline("s:1", reason="KeyError: 'x'", attempts=5)
    await store.append(commit("s", 2, status="completed"))

    await store.clear_deadlines(["s:1"])

    assert await prunable_ids(store) == ["s"]


async def test_pages_of_prunable_sagas_follow_each_other_to_the_end(store: Store) -> None:
    for n in range(5):
        await finished(store, f"s{n}", created_at=at(10))  # one millisecond for all

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.prunable(finished_before=CUTOFF, limit=2, cursor=cursor)
        seen += [s.saga_id for s in page.sagas]
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor

    assert seen == ["s0", "s1", "s2", "s3", "s4"]
    assert pages == 3


async def test_count_finished_counts_the_commits_that_finished_a_saga_before_the_time(
    store: Store,
) -> None:
    await finished(store, "a")
    await finished(store, "b", versions=3)
    await store.append(commit("running"))
    await finished(store, "late", created_at=CUTOFF)

    assert await store.count_finished(finished_before=CUTOFF) == 2
    assert await store.count_finished(finished_before=at(3)) == 1


async def test_prune_removes_the_sagas_commits_and_leaves_a_tombstone(store: Store) -> None:
    await finished(store, "old", versions=3)
    await finished(store, "kept")
    page = await store.prunable(finished_before=at(4), limit=100)
    assert [s.saga_id for s in page.sagas] == ["kept", "old"]

    removed = await store.prune([s for s in page.sagas if s.saga_id == "old"], now=at(2000))

    assert removed == 3
    assert await store.history("old") == []
    assert (await store.load("old")).version == 0
    assert await store.pruned("old")
    assert [c.version for c in await store.history("kept")] == [1, 2]
    assert not await store.pruned("kept")
    assert not await store.pruned("unknown")
    assert await prunable_ids(store) == ["kept"]


async def test_pruning_again_after_a_crash_half_way_removes_the_rest(store: Store) -> None:
    await finished(store, "s", versions=3)
    page = await store.prunable(finished_before=CUTOFF, limit=100)

    assert await store.prune(page.sagas, now=at(2000)) == 3
    assert await store.prune(page.sagas, now=at(3000)) == 0
    assert await store.prune([], now=at(3000)) == 0
    assert await store.pruned("s")
