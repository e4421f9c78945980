"""Review findings on the engine, each a failing test (xfail strict) over the real runtime
with the in-memory store and scripted participants (reply ids as the participant kit
makes them: ``<command message id>:reply``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.errors import Deferred
from orchestrator.messaging.envelope import Envelope
from orchestrator.saga.state import Status
from orchestrator.testing import SagaTestKit
from orchestrator.testing.script import refuse, reply
from tests.unit.toy_saga import Toy, contracts, start, toy_saga


async def test_a_resumed_retriable_step_completes_after_its_refusal() -> None:
    kit = SagaTestKit(toy_saga(2))
    # The participant refuses the first send (e.g. an account is closed); the operator
    # fixes it and resumes; the resent command then succeeds.
    kit.script(contracts("settle").do, refuse("account closed"), reply())

    parked = await kit.start(start(), saga_id="s-1")
    assert parked.state.status is Status.COMPLETING_STUCK

    resumed = await kit.resume("s-1")

    assert resumed.state.status is Status.COMPLETED, (
        resumed.state.status,
        kit.runtime.stats.ignored_by_reason,
        kit.runtime.stats.duplicates,
    )


async def test_a_stray_reply_of_a_finished_saga_on_a_dropped_version_is_not_deferred_forever() -> (
    None
):
    old = SagaTestKit(toy_saga(2, version=1))
    done = await old.start(start(), saga_id="s-2")
    assert done.state.status is Status.COMPLETED

    # The next release serves v2 only: allowed, since no v1 saga is in flight.
    new = SagaTestKit(toy_saga(2, version=2))
    new.store = old.store
    new.runtime.store = old.store
    # (start-up allows it: the in-flight count of v1 is 0 once its sagas ended)

    # A participant's late second copy of a reply (another message id: e.g. a
    # redelivered command handled again) reaches the new release.
    stray = Envelope(
        message=Toy("prep").done(),
        message_id="s-2:prep:do:reply:copy",
        correlation_id="s-2",
    )
    try:
        await new.runtime.handle(stray)
    except Deferred:
        # The consumer sends a Deferred message round the first retry tier with no
        # attempt counted: every delivery ends here again, so it never ends at all.
        pytest.fail("deferred for an instance that will never exist")


async def test_a_start_for_a_pruned_saga_does_not_run_it_again() -> None:
    kit = SagaTestKit(toy_saga(2))
    kit.runtime.tombstone_recheck = 0  # the store is asked again at every start
    done = await kit.start(start(), saga_id="s-3", message_id="s-3:start")
    assert done.state.status is Status.COMPLETED
    await kit.dispatcher.flush()
    # Superseded deadlines, as the batcher's bookkeeper clears them in production.
    await kit.store.clear_deadlines([c.id for c in done.history])
    page = await kit.store.prunable(finished_before=kit.clock.now + timedelta(days=1), limit=10)
    assert [s.saga_id for s in page.sagas] == ["s-3"]
    await kit.store.prune(page.sagas, now=kit.clock.now)
    assert await kit.store.pruned("s-3")
    sent_before = len(kit.publisher.sent)

    # The API republishes the start on every retry with the same Idempotency-Key (its
    # saga id is derived from the key, kept 7 days); an operator may replay it too.
    again = await kit.start(start(), saga_id="s-3", message_id="s-3:start")

    assert again.state.status is None, "the pruned saga ran again"
    assert len(kit.publisher.sent) == sent_before, "its commands were sent again"


async def test_a_stray_reply_of_a_newer_version_waits_for_an_instance_that_serves_it() -> None:
    """During the rollout of a newer release, an instance of the older one must not
    decide a saga of the newer version with its own older definition (it might not know
    a step to undo): the message is left (deferred) for an instance that serves it."""
    newer = SagaTestKit(toy_saga(2, version=3))
    done = await newer.start(start(), saga_id="s-4")
    assert done.state.status is Status.COMPLETED

    older = SagaTestKit(toy_saga(2, version=2))
    older.store = newer.store
    older.runtime.store = newer.store
    stray = Envelope(
        message=Toy("prep").done(), message_id="s-4:prep:do:reply:copy", correlation_id="s-4"
    )

    with pytest.raises(Deferred):
        await older.runtime.handle(stray)


async def test_a_failed_tombstone_check_is_asked_again_at_the_next_start() -> None:
    """The store not answering whether it has tombstones must not switch the check off."""
    kit = SagaTestKit(toy_saga(2))
    asked: list[bool] = []
    answers = kit.store.has_pruned

    async def flaky() -> bool:
        asked.append(True)
        if len(asked) == 1:
            raise ConnectionError("store election")
        return await answers()

    kit.store.has_pruned = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await kit.start(start(), saga_id="s-5", message_id="s-5:start")

    await kit.start(start(), saga_id="s-5", message_id="s-5:start")

    assert len(asked) == 2, "asked again after the failure"
