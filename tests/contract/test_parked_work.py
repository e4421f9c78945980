"""The ``ParkedWorkStore`` port's contract, run against every adapter: what an operator
sees of pending and parked work, and retrying or dropping what was parked."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.contract.support import Store, at, commit, entry


async def parked_outbox_and_deadline(store: Store) -> None:
    """``bad:1`` with its outbox and its deadline parked; ``good:1`` pending beside."""
    await store.append(commit("bad", outbox=(entry(1), entry(2, type_="x.v1")), deadline=at(10)))
    await store.append(commit("good", outbox=(entry(),), deadline=at(20)))
    await store.park_outbox("bad:1", reason="Unroutable: no queue", attempts=8)
    await store.park_deadline("bad:1", reason="KeyError: 'x'", attempts=5)


async def test_live_work_counts_each_live_set(store: Store) -> None:
    await parked_outbox_and_deadline(store)
    await store.append(commit("done", outbox=(entry(),), status="completed"))
    await store.mark_dispatched(["done:1"])

    work = await store.live_work()

    assert (
        work.pending_outbox,
        work.active_deadlines,
        work.parked_outbox,
        work.parked_deadlines,
    ) == (1, 1, 1, 1)


async def test_live_work_counts_up_to_the_cap(store: Store) -> None:
    for n in range(4):
        await store.append(commit(f"s{n}", outbox=(entry(),), deadline=at(10)))

    work = await store.live_work(cap=3)

    assert (work.pending_outbox, work.active_deadlines, work.cap) == (3, 3, 3)


async def test_parked_work_says_what_why_and_after_how_many_attempts(store: Store) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    await parked_outbox_and_deadline(store)

    parked = {p.kind: p for p in await store.parked()}

    assert sorted(parked) == ["deadline", "outbox"]
    outbox, deadline = parked["outbox"], parked["deadline"]
    assert (outbox.commit_id, outbox.saga_id, outbox.saga_name, outbox.version) == (
        "bad:1",
        "bad",
        "travel",
        1,
    )
    assert (outbox.reason, outbox.attempts) == ("Unroutable: no queue", 8)
    assert outbox.messages == ("saga.completed.v2", "x.v1")
    assert (deadline.reason, deadline.attempts, deadline.messages) == ("KeyError: 'x'", 5, ())
    assert before <= outbox.parked_at <= datetime.now(UTC)


async def test_parked_returns_at_most_limit(store: Store) -> None:
    for n in range(3):
        await store.append(commit(f"s{n}", outbox=(entry(),)))
        await store.park_outbox(f"s{n}:1", reason="r", attempts=1)

    assert len(await store.parked(limit=2)) == 2


async def test_a_retried_outbox_is_pending_now_with_no_attempts(store: Store) -> None:
    """Only the kind asked for: the deadline stays parked."""
    await parked_outbox_and_deadline(store)

    assert await store.retry_parked("bad:1", now=at(50), kind="outbox") == ["outbox"]

    pending = await store.undispatched(older_than=at(50), limit=10)
    assert [(p.commit.id, p.attempts) for p in pending] == [("good:1", 0), ("bad:1", 0)]
    assert [p.kind for p in await store.parked()] == ["deadline"]


async def test_a_retried_deadline_is_due_now_with_no_attempts(store: Store) -> None:
    await parked_outbox_and_deadline(store)

    assert await store.retry_parked("bad:1", now=at(50), kind="deadline") == ["deadline"]

    due = await store.due_deadlines(now=at(50), limit=10)
    assert [(d.commit_id, d.deadline, d.attempts) for d in due] == [
        ("good:1", at(20), 0),
        ("bad:1", at(50), 0),
    ]
    assert [p.kind for p in await store.parked()] == ["outbox"]


async def test_retrying_a_commit_retries_all_its_parked_work(store: Store) -> None:
    await parked_outbox_and_deadline(store)

    assert await store.retry_parked("bad:1", now=at(50)) == ["outbox", "deadline"]

    assert await store.parked() == []
    work = await store.live_work()
    assert (work.pending_outbox, work.active_deadlines) == (2, 2)
    assert (work.parked_outbox, work.parked_deadlines) == (0, 0)


async def test_dropped_work_is_gone_for_good_and_the_commit_stays(store: Store) -> None:
    await parked_outbox_and_deadline(store)

    assert await store.drop_parked("bad:1", kind="deadline") == ["deadline"]
    assert await store.drop_parked("bad:1") == ["outbox"]

    assert await store.parked() == []
    assert [p.commit.id for p in await store.undispatched(older_than=at(100), limit=10)] == [
        "good:1"
    ]
    assert [d.commit_id for d in await store.due_deadlines(now=at(100), limit=10)] == ["good:1"]
    assert [c.id for c in await store.history("bad")] == ["bad:1"]


async def test_work_that_is_not_parked_is_neither_retried_nor_dropped(store: Store) -> None:
    await parked_outbox_and_deadline(store)

    assert await store.retry_parked("good:1", now=at(50)) == []
    assert await store.drop_parked("good:1") == []
    assert await store.retry_parked("unknown:1", now=at(50)) == []
    assert await store.drop_parked("unknown:1") == []

    assert [p.commit.id for p in await store.undispatched(older_than=at(100), limit=10)] == [
        "good:1"
    ]
    assert len(await store.parked()) == 2


async def test_a_parked_deadline_the_saga_moved_past_is_no_longer_parked(store: Store) -> None:
    """An operator resumed the saga: its next commit supersedes the parked deadline."""
    await store.append(commit(deadline=at(10)))
    await store.park_deadline("s1:1", reason="KeyError: 'x'", attempts=5)
    await store.append(commit(version=2, status="completed"))

    await store.clear_deadlines(["s1:1"])

    work = await store.live_work()
    assert (work.parked_deadlines, work.active_deadlines) == (0, 0)
    assert await store.parked() == []
