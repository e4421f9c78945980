"""The shipped in-memory test kit: the real runtime, scripted participants, a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import SagaCompensated, SagaCompleted, SagaFailed
from orchestrator.saga.state import EventType
from orchestrator.testing import (
    SagaTestKit,
    ScriptError,
    duplicate,
    late,
    no_reply,
    refuse,
    reply,
)
from tests.unit.registration_saga import (
    REGISTRATION,
    BadgePrinted,
    ChargeFee,
    FeeCharged,
    FeeDeclined,
    HoldSeat,
    PrintBadge,
    RefundFee,
    badge,
    register,
)

DO = ["seats.hold_seat", "billing.charge_fee", "badges.print_badge"]


@pytest.fixture
def kit() -> SagaTestKit:
    """The registration saga; the badge printer answers with badge number 7."""
    kit = SagaTestKit(REGISTRATION)
    kit.script(PrintBadge, reply(badge))
    return kit


async def test_every_step_succeeds_so_the_saga_completes(kit: SagaTestKit) -> None:
    saga = await kit.start(register("reg-1"))

    assert saga.status == "completed"
    assert saga.commands == DO
    assert saga.outcome == SagaCompleted(
        saga_name="registration",
        reference="reg-1",
        saga_version=1,
        steps=("hold_seat", "charge_fee", "print_badge"),
    )
    assert saga.events[0] == EventType.SAGA_STARTED
    assert saga.events[-1] == EventType.SAGA_COMPLETED
    assert kit.store.appends == 4  # one commit per processed message


async def test_the_third_step_refuses_so_the_first_two_are_compensated_in_reverse() -> None:
    kit = SagaTestKit(REGISTRATION)
    kit.script(PrintBadge, refuse("printer jammed"))
    saga = await kit.start(register())
    assert saga.status == "compensated"
    assert saga.commands == [*DO, "billing.refund_fee", "seats.release_seat"]

    assert saga.compensated == ["charge_fee", "hold_seat"]
    assert saga.outcome == SagaCompensated(
        saga_name="registration",
        reference="reg-1",
        reason="printer jammed",
        failed_step="print_badge",
        saga_version=1,
    )


async def test_the_first_step_refuses_so_nothing_is_undone(kit: SagaTestKit) -> None:
    kit.script(HoldSeat, refuse("sold out"))

    saga = await kit.start(register())

    assert saga.status == "failed"
    assert saga.commands == ["seats.hold_seat"]
    assert saga.outcome == SagaFailed(
        saga_name="registration", reference="reg-1", reason="sold out", saga_version=1
    )


async def test_a_refusal_can_be_given_as_the_reply_itself(kit: SagaTestKit) -> None:
    kit.script(
        ChargeFee,
        refuse(answer=lambda c: FeeDeclined(registration_id=c.registration_id, reason="x")),
    )

    saga = await kit.start(register())

    assert saga.status == "compensated"
    assert saga.reason == "x"


async def test_a_participant_that_never_answers_is_resent_then_given_up_and_undone(
    kit: SagaTestKit,
) -> None:
    kit.script(PrintBadge, no_reply())
    saga = await kit.start(register())
    assert saga.status == "running"
    started = kit.clock.now

    await kit.advance(9)
    assert (await kit.saga(saga.saga_id)).commands == DO  # the 10 s deadline has not passed
    await kit.advance(1)
    assert (await kit.saga(saga.saga_id)).commands == [*DO, "badges.print_badge"]
    await kit.advance(10)

    saga = await kit.saga(saga.saga_id)
    assert saga.status == "compensated"
    # The badge may have been printed without its reply arriving: it is shredded too.
    assert saga.commands == [
        *DO,
        "badges.print_badge",
        "badges.shred_badge",
        "billing.refund_fee",
        "seats.release_seat",
    ]
    timed_out = next(e for c in saga.history for e in c.events if e.type == "step_timed_out")
    assert timed_out.at == started + timedelta(seconds=20)
    assert kit.clock.now == started + timedelta(seconds=20)


async def test_a_resend_that_is_answered_lets_the_saga_carry_on(kit: SagaTestKit) -> None:
    kit.script(ChargeFee, no_reply(), reply())

    saga = await kit.start(register())
    await kit.advance(30)

    saga = await kit.saga(saga.saga_id)
    assert saga.status == "completed"
    assert saga.commands == [DO[0], DO[1], DO[1], DO[2]]
    assert EventType.COMMAND_RESENT in saga.events


async def test_a_success_after_the_step_was_given_up_is_itself_compensated(
    kit: SagaTestKit,
) -> None:
    kit.script(PrintBadge, late(reply(badge), after=25), no_reply())

    saga = await kit.start(register())
    await kit.advance_until_idle()

    saga = await kit.saga(saga.saga_id)
    assert saga.status == "compensated"
    assert EventType.LATE_SUCCESS_COMPENSATING in saga.events
    assert saga.commands.count("badges.shred_badge") == 2  # on giving up, and for the late reply


async def test_a_late_reply_before_the_deadline_is_just_a_reply(kit: SagaTestKit) -> None:
    kit.script(ChargeFee, late(after=5))

    saga = await kit.start(register())
    assert saga.status == "running"
    await kit.advance(5)

    assert (await kit.saga(saga.saga_id)).status == "completed"


async def test_a_duplicated_reply_has_its_effect_once(kit: SagaTestKit) -> None:
    kit.script(HoldSeat, duplicate(copies=3))

    saga = await kit.start(register())

    assert saga.status == "completed"
    assert saga.events.count(EventType.STEP_SUCCEEDED) == 3
    assert saga.commands == DO
    assert kit.runtime.stats.duplicates == 2


async def test_a_compensation_that_never_answers_parks_the_saga_until_resumed(
    kit: SagaTestKit,
) -> None:
    kit.script(PrintBadge, refuse("no ink"))
    kit.script(RefundFee, no_reply())
    saga = await kit.start(register())
    await kit.advance_until_idle()

    parked = await kit.saga(saga.saga_id)
    assert parked.status == "compensation_failed"
    assert parked.reason == "no reply to charge_fee after 3 sends"

    kit.script(RefundFee, reply())
    resumed = await kit.resume(saga.saga_id)
    assert resumed.status == "compensated"
    assert resumed.compensated == ["charge_fee", "hold_seat"]


async def test_a_publish_the_broker_does_not_confirm_is_sent_by_the_relay(
    kit: SagaTestKit,
) -> None:
    kit.publisher.fail(times=1)
    saga = await kit.start(register())
    assert saga.commands == []  # stored, not yet published

    assert await kit.relay() == 1

    assert (await kit.saga(saga.saga_id)).status == "completed"


async def test_a_reply_for_no_saga_is_dead_lettered_not_raised(kit: SagaTestKit) -> None:
    stray = FeeCharged(registration_id="r", fee_cents=1)

    result = await kit.deliver("nobody", stray)

    assert [d.reason for d in result.dead_letters] == ["unknown_saga"]
    assert result.status is None


async def test_sagas_in_one_kit_do_not_see_each_other(kit: SagaTestKit) -> None:
    kit.script(ChargeFee, refuse("card expired"))

    first = await kit.start(register("reg-1"))
    second = await kit.start(register("reg-2", fee_cents=0))

    assert (first.saga_id, second.saga_id) == ("saga-1", "saga-2")
    assert [first.status, second.status] == ["compensated", "compensated"]
    assert first.commands == second.commands


async def test_many_sagas_run_in_memory(kit: SagaTestKit) -> None:
    sagas = [await kit.start(register(f"reg-{i}")) for i in range(200)]

    assert {s.status for s in sagas} == {"completed"}
    assert kit.store.appends == 800


# --- clear errors ----------------------------------------------------------------------


async def test_a_reply_the_kit_cannot_build_says_how_to_script_it() -> None:
    kit = SagaTestKit(REGISTRATION)

    with pytest.raises(ScriptError, match=r"cannot build badges\.badge_printed\.v1 .*badge_number"):
        await kit.start(register())


async def test_a_refusal_must_be_the_steps_refusal(kit: SagaTestKit) -> None:
    kit.script(
        PrintBadge, refuse(answer=lambda c: BadgePrinted(registration_id="r", badge_number=1))
    )

    with pytest.raises(ScriptError, match=r"the step's refusal is badges\.badge_refused\.v1"):
        await kit.start(register())


async def test_a_compensation_cannot_be_refused(kit: SagaTestKit) -> None:
    kit.script(PrintBadge, refuse())
    kit.script(RefundFee, refuse())

    with pytest.raises(ScriptError, match="a compensation cannot be refused"):
        await kit.start(register())


def test_only_commands_of_the_sagas_can_be_scripted(kit: SagaTestKit) -> None:
    with pytest.raises(ScriptError, match="FeeCharged is no command of these sagas"):
        kit.script(FeeCharged, reply())


async def test_only_a_start_command_starts_a_saga(kit: SagaTestKit) -> None:
    with pytest.raises(Exception, match=r"starts none of the sagas here \(registration: "):
        await kit.start(HoldSeat(registration_id="r"))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: late(after=0), "a delay > 0"),
        (lambda: late(no_reply(), after=1), "never answers"),
        (lambda: duplicate(copies=1), "at least 2"),
        (lambda: duplicate(no_reply()), "never answers"),
    ],
    ids=["late_now", "late_silence", "one_copy", "duplicate_silence"],
)
def test_behaviours_that_make_no_sense_are_refused(make: object, error: str) -> None:
    with pytest.raises(ScriptError, match=error):
        make()  # type: ignore[operator]
