"""Adapters of the saga store port: MongoDB (production) and in memory (tests, the kit)."""

from orchestrator.store.connect import connect_mongo
from orchestrator.store.memory import InMemorySagaStore
from orchestrator.store.mongo import MongoSagaStore

__all__ = ["InMemorySagaStore", "MongoSagaStore", "connect_mongo"]
