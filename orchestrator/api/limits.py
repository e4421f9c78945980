"""A limit on request bodies: a larger one is refused with 413 before any route reads it.

The limit is the deployment's ``SAGA_MAX_BODY_BYTES``: a start command larger than that
would be dead-lettered as ``too_large`` by the orchestrator anyway. The body is counted
as it arrives, so a chunked upload without ``Content-Length`` is refused as well.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DRAIN", "BodyLimit"]

DRAIN = 1024 * 1024
"""Bytes beyond the limit still read (and dropped) before answering 413, so that an
ordinary client gets the answer; beyond that the connection is closed."""


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > DRAIN + self.max_bytes:
            await self._refuse(send, close=True)  # not worth reading: answer and hang up
            return
        body = bytearray()
        size = 0
        more = True
        while more:  # read it all first (it is small): a route never sees a cut body
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                body += chunk
            more = message.get("more_body", False)
            if size > self.max_bytes + DRAIN:
                await self._refuse(send, close=True)
                return
        if size > self.max_bytes:
            # Read to the end first, so the client sees the answer, not a reset connection.
            await self._refuse(send, close=False)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, send: Send, *, close: bool) -> None:
        detail = {"detail": f"the request body is larger than {self.max_bytes} bytes"}
        payload = json.dumps(detail).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then what the client sends next
    (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
