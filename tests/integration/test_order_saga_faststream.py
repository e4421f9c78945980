"""The order saga end to end with the faststream shipping participant: every test of
``test_order_saga`` again, shipping served by ``participants.shipping.streams``."""

from __future__ import annotations

import pytest

from tests.integration.test_order_saga import *  # noqa: F403 - the same tests, collected here too

pytestmark = pytest.mark.integration


@pytest.fixture
def shipping_flavour() -> str:
    """Shipping runs as the faststream participant in this module."""
    return "faststream"
