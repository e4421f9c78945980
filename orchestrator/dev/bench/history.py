"""History for ``saga bench --history N``: N finished sagas, seeded quickly.

The documents are the ones the system itself writes. A few template sagas run through
the real services first; every document of every collection that mentions a template's
saga id (commits, participants' records, read-side rows) is captured; then each of the N
clones is a copy of one template with the saga id (and its prefixes, which order ids and
references are made of) replaced by a fresh one of the same length, inserted with
``insert_many(ordered=False)`` in batches per collection. A document shared by sagas (a
SKU) keeps its ``_id`` and is skipped as a duplicate; live-work fields are dropped, and
each clone finished one millisecond apart so retention pages stay small.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions
from pymongo.errors import BulkWriteError

from orchestrator.store.shape import DEADLINE_AT, FINISHED_AT, OUTBOX_AT, PARKED_AT

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message
    from orchestrator.settings import Settings

__all__ = ["HistorySeed", "Template", "capture_templates", "run_templates", "seed_history"]

Doc = dict[str, Any]
Progress = Callable[[int, int], None]
PREFIXES = (32, 16, 12, 8)
"""Lengths of the saga id's prefixes replaced too (order ids are ``bench-<id[:16]>``)."""
LIVE = (OUTBOX_AT, DEADLINE_AT, PARKED_AT, "outbox_attempts", "deadline_attempts")
CODEC: CodecOptions[Doc] = CodecOptions(tz_aware=True)
SKIPPED = ("saga_tombstones",)


@dataclass(frozen=True, kw_only=True)
class Template:
    """Every stored document about one finished saga, per collection, encoded."""

    saga_id: str
    docs: Mapping[str, tuple[bytes, ...]]

    @property
    def size(self) -> int:
        """Documents per clone."""
        return sum(len(d) for d in self.docs.values())


@dataclass(frozen=True, kw_only=True)
class HistorySeed:
    """What seeding did: sagas, documents inserted, seconds taken."""

    sagas: int
    documents: int
    seconds: float
    templates: int
    saga_ids: tuple[str, ...] = ()
    """The clones' saga ids; clone ``i`` copies template ``i % templates``."""

    def as_dict(self) -> dict[str, Any]:
        """For the report."""
        return {
            "sagas": self.sagas,
            "documents": self.documents,
            "seconds": round(self.seconds, 1),
            "templates": self.templates,
        }


async def run_templates(
    settings: Settings,
    start: Callable[[str], Message],
    *,
    count: int = 3,
    read_side: bool = False,
    timeout: float = 60.0,
) -> list[str]:
    """Run ``count`` sagas (``start(saga_id)`` builds each start command) through the
    running system, all at once, to their end and until their outboxes are flagged (and,
    with the read side, projected). Their saga ids."""
    from orchestrator.client import SagaClient, new_saga_id  # noqa: PLC0415 - dev only

    async with SagaClient(settings, name="bench-history") as client:
        ids = [new_saga_id() for _ in range(count)]
        for saga_id in ids:
            await client.start(start(saga_id), saga_id=saga_id)
        for saga_id in ids:
            await client.wait_settled(saga_id, timeout=timeout)
        db = client.store.commits.database
        for _ in range(200):
            busy = await db["saga_commits"].find_one(
                {"saga_id": {"$in": ids}, OUTBOX_AT: {"$gte": 0}}, {"_id": 1}
            )
            projected = not read_side or await db["readside_sagas"].count_documents(
                {"_id": {"$in": ids}}
            ) == len(ids)
            if busy is None and projected:
                break
            await asyncio.sleep(0.05)
    return ids


async def capture_templates(
    database: AsyncDatabase[Doc], saga_ids: Sequence[str]
) -> list[Template]:
    """The documents that mention each saga id, in every collection (for a small
    database: every document is looked at once)."""
    found: dict[str, dict[str, list[bytes]]] = {s: {} for s in saga_ids}
    needles = {s: s.encode() for s in saga_ids}
    for name in sorted(await database.list_collection_names()):
        if name in SKIPPED:
            continue
        async for doc in database[name].find({}):
            raw = bson.encode(doc)
            for saga_id, needle in needles.items():
                if needle in raw:
                    found[saga_id].setdefault(name, []).append(raw)
    return [
        Template(saga_id=s, docs={k: tuple(v) for k, v in found[s].items()})
        for s in saga_ids
        if found[s]
    ]


def clone(template: Template, saga_id: str, *, finished_at_ms: int | None) -> dict[str, list[Doc]]:
    """One copy of the template under another saga id of the same length."""
    if len(saga_id) != len(template.saga_id):
        raise ValueError("a clone's saga id must be as long as the template's")
    pairs = [
        (template.saga_id[:n].encode(), saga_id[:n].encode()) for n in PREFIXES if n <= len(saga_id)
    ]
    out: dict[str, list[Doc]] = {}
    for name, docs in template.docs.items():
        for original in docs:
            raw = original
            for old, new in pairs:
                raw = raw.replace(old, new)
            doc = bson.decode(raw, CODEC)
            if isinstance(doc.get("_id"), ObjectId):
                doc["_id"] = ObjectId()
            for live in LIVE:
                doc.pop(live, None)
            if finished_at_ms is not None and FINISHED_AT in doc:
                doc[FINISHED_AT] = finished_at_ms
            out.setdefault(name, []).append(doc)
    return out


def _fresh_ids(n: int, length: int, first: int = 0) -> list[str]:
    """``n`` saga ids of ``length`` hex digits whose every replaced prefix is unique (and
    unique across calls that number their clones on from ``first``)."""
    tag = secrets.token_hex(length)[: length - 8]
    return [f"{first + i:08x}{tag}"[:length] for i in range(n)]


async def seed_history(
    database: AsyncDatabase[Doc],
    templates: Sequence[Template],
    n: int,
    *,
    batch: int = 1000,
    finished_before: datetime | None = None,
    progress: Progress | None = None,
    first: int = 0,
) -> HistorySeed:
    """Insert ``n`` clones of the templates (round robin), ``batch`` documents per
    insert; they finished one millisecond apart, the last just before ``finished_before``
    (default: now). Clones of several calls into one database are numbered on from
    ``first`` (the clones made before), so that their ids differ in every prefix."""
    if not templates:
        raise ValueError("no template saga to clone (did the template sagas run?)")
    started = time.monotonic()
    ids = _fresh_ids(n, len(templates[0].saga_id), first)
    end_ms = int((finished_before or datetime.now(UTC)).timestamp() * 1000)
    pending: dict[str, list[Doc]] = {}
    inserted = 0
    for i, saga_id in enumerate(ids):
        at = end_ms - (n - i)
        for name, docs in clone(templates[i % len(templates)], saga_id, finished_at_ms=at).items():
            pending.setdefault(name, []).extend(docs)
        if sum(len(d) for d in pending.values()) >= batch:
            inserted += await _flush(database, pending)
            if progress is not None:
                progress(i + 1, n)
        if i % 200 == 0:
            await asyncio.sleep(0)  # keep the event loop (and its display) alive
    inserted += await _flush(database, pending)
    if progress is not None:
        progress(n, n)
    return HistorySeed(
        sagas=n,
        documents=inserted,
        seconds=time.monotonic() - started,
        templates=len(templates),
        saga_ids=tuple(ids),
    )


async def _flush(database: AsyncDatabase[Doc], pending: dict[str, list[Doc]]) -> int:
    """Insert what is pending, the collections side by side; returns documents stored."""
    work: list[Awaitable[int]] = [_insert(database, name, docs) for name, docs in pending.items()]
    pending.clear()
    return sum(await asyncio.gather(*work))


async def _insert(database: AsyncDatabase[Doc], name: str, docs: list[Doc]) -> int:
    if not docs:
        return 0
    try:
        result = await database[name].insert_many(docs, ordered=False)
    except BulkWriteError as e:  # duplicates: documents shared by sagas (a SKU)
        if any(w.get("code") != 11000 for w in e.details.get("writeErrors", [])):
            raise
        return int(e.details.get("nInserted", 0))
    return len(result.inserted_ids)
