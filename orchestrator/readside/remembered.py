"""What a projection wrote last, kept in memory for the origin's next event.

The projections here read a guard document (a saga's summary, a saga's stock row),
fold the event into it and write it back conditionally on the version they read. The
next event of the same saga usually reaches the same process, so the document this
process wrote is kept, and that event is folded into it without a read. The write
stays conditional on the version: a copy that is behind the store (another instance
of the read side consumed an event of the saga, a rebuild, a deletion) fails its write,
and the projection reads the store and goes on as before. Only documents without a
pending movement are kept, and at most ``limit`` (the least recently written go first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["REMEMBERED", "Remembered"]

Doc = dict[str, Any]
REMEMBERED = 10_000
"""Documents a projection keeps in memory, by default."""


class Remembered:
    """The last documents written, by ``_id``, least recently written first."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self.limit = limit
        self.reads_saved = 0
        self._docs: OrderedDict[str, Doc] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def take(self, key: str) -> Doc | None:
        """The document kept for ``key`` (then no longer kept), or None."""
        doc = self._docs.pop(key, None)
        if doc is not None:
            self.reads_saved += 1
        return doc

    def keep(self, doc: Doc) -> None:
        """Keep a copy of the document as it is now stored (without ``pending``)."""
        key = doc["_id"]
        self._docs.pop(key, None)
        if self.limit <= 0:
            return
        self._docs[key] = {k: v for k, v in doc.items() if k != "pending"}
        while len(self._docs) > self.limit:
            self._docs.popitem(last=False)

    def forget(self, key: str) -> None:
        """Keep nothing for ``key``."""
        self._docs.pop(key, None)
