"""The ``DeadlineStore`` port's contract, run against every adapter: the watcher sees the
deadlines armed by sagas' commits (and stale ones not cleared yet), and only those."""

from __future__ import annotations

from dataclasses import replace

from tests.contract.support import Store, at, commit

# --- due deadlines -------------------------------------------------------------------


async def test_only_passed_deadlines_are_due_oldest_first(store: Store) -> None:
    for saga_id, seconds in (("s2", 20), ("s1", 10), ("s3", 30), ("s4", 40)):
        await store.append(commit(saga_id, deadline=at(seconds)))
    await store.append(commit("s5"))  # no deadline

    due = await store.due_deadlines(now=at(30), limit=10)

    assert [(d.saga_id, d.deadline) for d in due] == [
        ("s1", at(10)),
        ("s2", at(20)),
        ("s3", at(30)),
    ]


async def test_due_deadlines_returns_at_most_limit(store: Store) -> None:
    for n in range(5):
        await store.append(commit(f"s{n}", deadline=at(n)))

    due = await store.due_deadlines(now=at(100), limit=3)

    assert [d.saga_id for d in due] == ["s0", "s1", "s2"]


async def test_a_deadline_of_the_latest_commit_is_live(store: Store) -> None:
    await store.append(commit(deadline=at(10)))

    [due] = await store.due_deadlines(now=at(10), limit=10)

    assert due.live
    assert (due.commit_id, due.saga_id, due.saga_name, due.version, due.attempts) == (
        "s1:1",
        "s1",
        "travel",
        1,
        0,
    )


async def test_a_deadline_of_a_commit_since_superseded_is_stale(store: Store) -> None:
    await store.append(commit(version=1, deadline=at(10)))
    await store.append(commit(version=2, deadline=at(50)))

    [due] = await store.due_deadlines(now=at(20), limit=10)

    assert (due.commit_id, due.live) == ("s1:1", False)


async def test_the_next_commit_carries_the_next_deadline(store: Store) -> None:
    # What the runtime does after a deadline fired: the resend's commit brings a new one.
    first = commit(version=1, deadline=at(10))
    await store.append(first)
    await store.append(replace(first, version=2, causation_id="deadline:1", deadline=at(40)))

    due = await store.due_deadlines(now=at(45), limit=10)

    assert [(d.version, d.live) for d in due] == [(1, False), (2, True)]


async def test_cleared_deadlines_are_no_longer_armed(store: Store) -> None:
    """Neither due nor next, and the commit reads back without a deadline."""
    await store.append(commit("s1", deadline=at(10)))
    await store.append(commit("s2", deadline=at(20)))

    await store.clear_deadlines(["s1:1", "unknown:3"])
    await store.clear_deadlines([])

    assert [d.saga_id for d in await store.due_deadlines(now=at(100), limit=10)] == ["s2"]
    assert await store.next_deadline() == at(20)
    assert [c.deadline for c in await store.history("s1")] == [None]
    assert [c.deadline for c in await store.history("s2")] == [at(20)]


async def test_deadlines_of_the_named_sagas_only(store: Store) -> None:
    await store.append(commit("t", deadline=at(10)))
    await store.append(commit("o", saga_name="order", deadline=at(20)))

    due = await store.due_deadlines(now=at(100), limit=10, saga_names=["order"])

    assert [d.commit_id for d in due] == ["o:1"]
    assert await store.due_deadlines(now=at(100), limit=10, saga_names=[]) == []
    assert await store.next_deadline(saga_names=["order"]) == at(20)
    assert await store.next_deadline(saga_names=["nobody"]) is None


async def test_next_deadline_is_the_earliest_armed_one_passed_or_not(store: Store) -> None:
    await store.append(commit("s2", deadline=at(200)))
    await store.append(commit("s1", deadline=at(100)))
    await store.append(commit("s3"))

    assert await store.next_deadline() == at(100)
    await store.clear_deadlines(["s1:1", "s2:1"])
    assert await store.next_deadline() is None


# --- failing deadlines ---------------------------------------------------------------


async def test_a_deferred_deadline_is_due_again_later_with_its_attempts(store: Store) -> None:
    """It moves out of the head of the query, and its commit reads back with the time
    it is armed for now."""
    await store.append(commit("bad", deadline=at(10)))
    await store.append(commit("good", deadline=at(20)))

    await store.defer_deadline("bad:1", until=at(60), attempts=2, error="KeyError: 'x'")

    assert [d.commit_id for d in await store.due_deadlines(now=at(30), limit=1)] == ["good:1"]
    due = await store.due_deadlines(now=at(60), limit=10)
    assert [(d.commit_id, d.deadline, d.attempts, d.live) for d in due] == [
        ("good:1", at(20), 0, True),
        ("bad:1", at(60), 2, True),
    ]
    assert [c.deadline for c in await store.history("bad")] == [at(60)]


async def test_a_cleared_deadline_is_not_armed_again_by_a_late_deferral(store: Store) -> None:
    await store.append(commit(deadline=at(10)))
    await store.clear_deadlines(["s1:1"])

    await store.defer_deadline("s1:1", until=at(60), attempts=1, error="x")
    await store.defer_deadline("unknown:1", until=at(60), attempts=1, error="x")

    assert await store.due_deadlines(now=at(100), limit=10) == []
    assert await store.next_deadline() is None


async def test_a_parked_deadline_is_no_longer_armed(store: Store) -> None:
    await store.append(commit("bad", deadline=at(10)))
    await store.append(commit("good", deadline=at(20)))

    await store.park_deadline("bad:1", reason="KeyError: 'x'", attempts=5)

    assert [d.commit_id for d in await store.due_deadlines(now=at(100), limit=10)] == ["good:1"]
    assert await store.next_deadline() == at(20)
    assert [c.deadline for c in await store.history("bad")] == [None]


async def test_a_cleared_deadline_is_not_parked(store: Store) -> None:
    await store.append(commit(deadline=at(10)))
    await store.clear_deadlines(["s1:1"])

    await store.park_deadline("s1:1", reason="late", attempts=5)

    assert await store.parked() == []
