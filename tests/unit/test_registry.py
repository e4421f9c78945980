"""What a team gets wrong when it defines and registers a saga is refused at once, with
a message that names the saga, the step and what to change."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contracts import Message, message
from orchestrator.packs import PackError, SagaPack, load_object, load_packs, registry_of
from orchestrator.saga.definition import DefinitionError, SagaDefinition, Step
from orchestrator.saga.registry import SagaRegistry, UnknownSaga
from orchestrator.settings import ConfigError, Settings
from tests.unit.registration_saga import (
    REGISTRATION,
    ChargeFee,
    FeeCharged,
    FeeDeclined,
    FeeRefunded,
    HoldSeat,
    NoSeatLeft,
    RefundFee,
    Register,
    ReleaseSeat,
    SeatHeld,
    SeatReleased,
)

HERE = "tests.unit.registration_saga"


class Unregistered(Message):
    """A contract class someone forgot to decorate with ``@message(...)``."""

    registration_id: str


@message("registrations.register_again.v1")
class RegisterAgain(Message):
    """Another start command of the registrations area."""

    registration_id: str


@message("seats.reserve_seats.v1")
class StartsLikeASeatCommand(Message):
    """A start command in the area of the ``seats`` participant."""

    registration_id: str


def hold(**changes: Any) -> Step:
    fields: dict[str, Any] = {
        "name": "hold_seat",
        "participant": "seats",
        "command": lambda r: HoldSeat(registration_id=r.registration_id),
        "command_type": HoldSeat,
        "success": SeatHeld,
        "failure": NoSeatLeft,
        "compensate": lambda r: ReleaseSeat(registration_id=r.registration_id),
        "compensation_type": ReleaseSeat,
        "compensated": SeatReleased,
    }
    return Step(**{**fields, **changes})


def charge(**changes: Any) -> Step:
    fields: dict[str, Any] = {
        "name": "charge_fee",
        "participant": "billing",
        "command": lambda r: ChargeFee(registration_id=r.registration_id, fee_cents=r.fee_cents),
        "command_type": ChargeFee,
        "success": FeeCharged,
        "failure": FeeDeclined,
        "compensate": lambda r: RefundFee(registration_id=r.registration_id),
        "compensation_type": RefundFee,
        "compensated": FeeRefunded,
    }
    return Step(**{**fields, **changes})


# --- definitions ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["success", "failure", "compensated", "command_type"])
def test_an_unregistered_message_class_is_refused_by_name(role: str) -> None:
    with pytest.raises(
        DefinitionError,
        match=rf"step 'hold_seat': {role} Unregistered is not a registered message class",
    ):
        hold(**{role: Unregistered})


def test_a_type_name_instead_of_a_class_is_refused() -> None:
    with pytest.raises(
        DefinitionError, match=r"success 'seats\.seat_held\.v1' is not a registered"
    ):
        hold(success="seats.seat_held.v1")


def test_a_compensated_reply_without_a_compensation_command_is_refused() -> None:
    with pytest.raises(
        DefinitionError,
        match=r"step 'hold_seat': compensate and compensated go together, with "
        r"compensation_type: a compensation needs all three \(missing: compensate, "
        r"compensation_type\)",
    ):
        hold(compensate=None, compensation_type=None)


def test_a_compensation_command_without_its_builder_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"\(missing: compensate\)"):
        hold(compensate=None)


def test_a_compensation_without_its_reply_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"\(missing: compensated\)"):
        hold(compensated=None)


def test_duplicate_step_names_are_refused() -> None:
    with pytest.raises(
        DefinitionError, match="saga 'registration' has duplicate step names: hold_seat"
    ):
        SagaDefinition(name="registration", start=Register, steps=(hold(), hold()))


def test_a_reply_shared_by_two_steps_is_refused() -> None:
    shares = charge(success=SeatHeld)

    with pytest.raises(
        DefinitionError,
        match=r"reply seats\.seat_held\.v1 belongs to steps 'hold_seat' and 'charge_fee'",
    ):
        SagaDefinition(name="registration", start=Register, steps=(hold(), shares))


def test_one_reply_for_two_outcomes_of_a_step_is_refused() -> None:
    with pytest.raises(DefinitionError, match="success, failure and compensated must differ"):
        hold(failure=SeatHeld)


def test_a_start_routed_like_a_participant_command_is_refused() -> None:
    with pytest.raises(
        DefinitionError,
        match=r"start command seats\.reserve_seats\.v1 is routed like a command of "
        r"participant 'seats'",
    ):
        SagaDefinition(name="registration", start=StartsLikeASeatCommand, steps=(hold(),))


def test_a_start_that_is_also_a_reply_is_refused() -> None:
    with pytest.raises(DefinitionError, match="is both the start and a reply"):
        SagaDefinition(name="registration", start=Register, steps=(hold(success=Register),))


def test_a_saga_name_must_be_lower_snake_case() -> None:
    with pytest.raises(DefinitionError, match="a saga name is lower_snake_case"):
        SagaDefinition(name="Registration", start=Register, steps=(hold(),))


# --- the registry ----------------------------------------------------------------------


def test_two_sagas_with_one_start_type_are_refused() -> None:
    other = replace(REGISTRATION, name="late_registration")

    with pytest.raises(
        DefinitionError,
        match=r"sagas 'registration' and 'late_registration' both start with "
        r"registrations\.register\.v1",
    ):
        SagaRegistry([REGISTRATION, other])


def test_a_saga_named_like_a_participant_is_refused() -> None:
    seats = SagaDefinition(name="seats", start=RegisterAgain, steps=(charge(),))

    with pytest.raises(
        DefinitionError,
        match=r"saga 'seats' is named like a participant of saga 'registration'",
    ):
        SagaRegistry([REGISTRATION, seats])


def test_a_start_routed_like_another_sagas_participant_is_refused() -> None:
    # Its routing key would also reach the seats participant's command queue.
    other = SagaDefinition(name="seat_swap", start=StartsLikeASeatCommand, steps=(charge(),))

    with pytest.raises(
        DefinitionError,
        match=r"start command seats\.reserve_seats\.v1 of saga 'seat_swap' is routed like a "
        r"command of participant 'seats' \(of saga 'registration'\)",
    ):
        SagaRegistry([REGISTRATION, other])


def test_one_version_registered_twice_is_refused() -> None:
    with pytest.raises(DefinitionError, match="registration@v1 is registered twice"):
        SagaRegistry([REGISTRATION, replace(REGISTRATION, description="again")])


def test_an_unknown_saga_names_the_registered_ones() -> None:
    registry = SagaRegistry([REGISTRATION])

    with pytest.raises(UnknownSaga, match=r"no saga 'travel' is registered \(registered: "):
        registry.get("travel")
    with pytest.raises(UnknownSaga, match=r"saga 'registration' has no version 3 here \(v1\)"):
        registry.get("registration", 3)


# --- SAGA_DEFINITIONS ------------------------------------------------------------------


def test_a_definition_or_a_pack_or_a_list_of_them_loads() -> None:
    packs = load_packs((f"{HERE}:REGISTRATION",))

    assert [p.name for p in packs] == ["registration"]
    assert registry_of(packs).names == ("registration",)


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("tests.unit.registration_saga", r"is not 'pkg\.module:attribute'"),
        (":REGISTRATION", r"is not 'pkg\.module:attribute'"),
        ("tests.unit.no_such_module:SAGA", r"cannot import 'tests\.unit\.no_such_module'"),
        (f"{HERE}:NO_SUCH", r"tests\.unit\.registration_saga has no 'NO_SUCH'"),
        (f"{HERE}:register", r"is a function, not a SagaPack, a SagaDefinition or a list"),
        (f"{HERE}:REGISTRATION.name", r"is a str, not a SagaPack"),
    ],
    ids=["no_colon", "no_module", "no_such_module", "no_such_attribute", "a_function", "a_str"],
)
def test_an_entry_that_is_no_definition_is_refused_by_name(ref: str, error: str) -> None:
    with pytest.raises(PackError, match=error):
        load_packs((ref,))


def test_a_module_that_fails_on_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kit_broken_saga.py").write_text(
        textwrap.dedent(
            """
            from orchestrator.saga.definition import SagaDefinition
            from tests.unit.registration_saga import Register
            SAGA = SagaDefinition(name="broken", start=Register, steps=())
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(
        PackError,
        match=r"SAGA_DEFINITIONS entry 'kit_broken_saga:SAGA': importing 'kit_broken_saga' "
        r"failed: DefinitionError: saga 'broken' has no steps",
    ):
        load_object("kit_broken_saga:SAGA")


def test_no_entry_at_all_is_refused() -> None:
    with pytest.raises(PackError, match="SAGA_DEFINITIONS names no saga"):
        load_packs(())


def test_a_pack_needs_a_definition() -> None:
    with pytest.raises(PackError, match="pack 'empty' has no saga definition"):
        SagaPack(name="empty", definitions=())


@pytest.mark.parametrize("part", ["packs", "registry", "topology"])
def test_settings_turn_a_bad_entry_into_a_config_error(part: str) -> None:
    settings = Settings(saga_definitions=(f"{HERE}:NO_SUCH",))

    with pytest.raises(ConfigError, match=r"SAGA_DEFINITIONS: .*has no 'NO_SUCH'"):
        getattr(settings, part)()


@pytest.mark.parametrize("part", ["registry", "topology"])
def test_settings_turn_a_registry_conflict_into_a_config_error(
    part: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kit_late_registration.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import replace
            from tests.unit.registration_saga import REGISTRATION
            LATE = replace(REGISTRATION, name="late_registration")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings(saga_definitions=(f"{HERE}:REGISTRATION", "kit_late_registration:LATE"))

    with pytest.raises(ConfigError, match="SAGA_DEFINITIONS: sagas 'registration' and"):
        getattr(settings, part)()


def test_settings_read_saga_definitions_from_the_environment() -> None:
    env = {"SAGA_DEFINITIONS": f" {HERE}:REGISTRATION , ,"}

    settings = Settings.from_env(env)

    assert settings.saga_definitions == (f"{HERE}:REGISTRATION",)
    assert settings.registry().names == ("registration",)
    assert settings.topology().sagas == ("registration",)
