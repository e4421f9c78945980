"""The README's "Write your own saga" example runs as written (it cannot rot)."""

from __future__ import annotations

import inspect

from orchestrator.settings import Settings
from tests.readme import REF, example_blocks, example_dir, example_tests


def test_the_readme_example_has_a_definition_a_participant_and_a_kit_test() -> None:
    blocks = example_blocks()

    assert sorted(blocks) == [
        "holiday_saga/definition.py",
        "holiday_saga/hotel.py",
        "tests/test_holiday_saga.py",
    ]
    lines = sum(1 for code in blocks.values() for line in code.splitlines() if line.strip())
    assert lines <= 75, f"the example should stay short (about 60 lines), it has {lines}"


async def test_the_readme_kit_tests_pass() -> None:
    tests = [f for name, f in vars(example_tests()).items() if name.startswith("test_")]

    assert tests
    for test in tests:
        assert inspect.iscoroutinefunction(test)
        await test()


async def test_the_readme_participant_registers_its_handlers_and_refuses_clearly() -> None:
    example_dir()
    from holiday_saga.definition import NoRoom, ReleaseRoom, ReserveRoom  # noqa: PLC0415
    from holiday_saga.hotel import Hotel  # noqa: PLC0415

    hotel = Hotel(Settings(saga_definitions=(REF,)))
    await hotel.setup()

    assert [c.queue.name for c in hotel.consumers] == ["saga.hotel.commands"]
    assert set(hotel._commands) == {ReserveRoom, ReleaseRoom}
    refusal = await hotel.reserve("saga-1", ReserveRoom(booking_id="b-1", nights=15))
    assert refusal == NoRoom(booking_id="b-1", reason="at most 14 nights")
