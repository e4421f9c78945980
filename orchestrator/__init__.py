"""Saga orchestration over RabbitMQ with an event-sourced MongoDB store.

``saga`` is the pure core (definitions, state, decisions); ``ports`` the small protocols
the runtime needs; ``store`` and ``messaging`` the adapters; ``runtime`` the service
shell; ``ops``, ``api`` and ``cli`` the operator surface; ``packs`` the shipped sagas;
``dev`` the tools for developers, never imported by a production service.
"""
