"""The order pack's harness scenarios (``saga harness list`` shows them with every other
registered pack's).

Every scenario runs on its own fresh system (see ``orchestrator.dev.harness.deployment``)
with fault injection enabled, retry tiers of 0.1 s and 0.3 s and 5 s step deadlines
unless it says otherwise.
"""

from __future__ import annotations

from orchestrator.dev.harness.scenario import Scenario
from orchestrator.packs.order_fulfilment import scenarios_crashes as crashes
from orchestrator.packs.order_fulfilment import scenarios_faults as faults

__all__ = ["SCENARIOS"]

FAST_DEADLINES = {"step_timeout": 1.0, "deadline_poll": 0.1}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="happy-path",
        summary="every saga at once, plenty of stock, no faults: all complete",
        sagas=50,
        drive=faults.happy_path,
        injects=False,
    ),
    Scenario(
        name="payment-declined",
        summary="payment declines half of the sagas (decline rule with a count)",
        sagas=20,
        drive=faults.payment_declined,
    ),
    Scenario(
        name="shipping-fails",
        summary="shipping refuses every 4th saga (decline rules by saga id)",
        sagas=20,
        drive=faults.shipping_fails,
    ),
    Scenario(
        name="insufficient-stock",
        summary="4x more orders than units, all at once: exactly the stock is sold",
        sagas=40,
        drive=faults.insufficient_stock,
        injects=False,
    ),
    Scenario(
        name="retries-exhausted",
        summary="payment raises until retries are exhausted: dead-lettered, saga compensates",
        sagas=20,
        drive=faults.retries_exhausted,
        settings={"retry_delays": (0.1, 0.2), "step_timeout": 3.0, "step_max_sends": 1},
    ),
    Scenario(
        name="slow-participant",
        summary="shipping replies 1.5 s late against a 1 s deadline: resent, completes",
        sagas=20,
        drive=faults.slow_participant,
        settings={**FAST_DEADLINES, "step_max_sends": 5},
    ),
    Scenario(
        name="late-reply",
        summary="shipping replies after the step gave up: compensated, late reply too",
        sagas=20,
        drive=faults.late_reply,
        settings={**FAST_DEADLINES, "step_max_sends": 2},
    ),
    Scenario(
        name="reply-lost",
        summary="payment's reply dropped for half of the sagas: resent, all complete",
        sagas=20,
        drive=faults.reply_lost,
        settings={**FAST_DEADLINES, "step_max_sends": 3},
    ),
    Scenario(
        name="duplicate-storm",
        summary="start commands twice, every reply three times: each effect once",
        sagas=30,
        drive=faults.duplicate_storm,
    ),
    Scenario(
        name="poison-message",
        summary="malformed messages of every kind: dead-lettered with reasons, rest unharmed",
        sagas=20,
        drive=faults.poison_message,
        settings={"max_body_bytes": 4096},
    ),
    Scenario(
        name="orchestrator-killed",
        summary="orchestrator SIGKILLed mid-flight and restarted: every saga settles",
        sagas=40,
        drive=crashes.orchestrator_killed,
    ),
    Scenario(
        name="participant-killed",
        summary="payment crashes before acking (crash rule) and restarts: nothing lost",
        sagas=40,
        drive=crashes.participant_killed,
    ),
    Scenario(
        name="broker-restart",
        summary="rabbitmqctl stop_app/start_app with sagas in flight: nothing lost",
        sagas=40,
        drive=crashes.broker_restart,
        settings={"step_timeout": 10.0},
        timeout=150.0,
        needs=("rabbitmqctl",),
        local_broker=True,
    ),
)
