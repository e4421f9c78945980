"""Upgrading from the release where the order saga was the only one: commands it sent
carry ``reply_to = "orchestrator"``, and their replies must still reach the order saga."""

from __future__ import annotations

from orchestrator.messaging.topology import LEGACY_REPLY_KEY
from orchestrator.settings import Settings


def test_the_old_reply_key_is_bound_to_the_order_sagas_reply_queue_only() -> None:
    topology = Settings().topology()

    bound = {
        q.name: q.bindings for q in topology.work_queues if q.exchange == topology.replies_exchange
    }

    assert LEGACY_REPLY_KEY in bound["saga.orchestrator.order_fulfilment.replies"]
    others = [name for name, keys in bound.items() if LEGACY_REPLY_KEY in keys]
    assert others == ["saga.orchestrator.order_fulfilment.replies"]
