"""Bounds on what a connection may hold without sending a request.

uvicorn bounds neither: its keep-alive timer starts only after a response and stops at
the first byte of the next request, and a connection that sends nothing, or half a
request line, stays open for ever. So every connection that waits for a request (just
opened, or after its last response) must deliver that request's headers within
``read_timeout`` seconds or is closed, and at most ``MAX_IDLE_CONNECTIONS`` may wait at
once: one more closes the one that has waited longest, so new clients always get in.
A request's body has its own deadline, in the app (``ServerState.read_json``).

The protocol is uvicorn's own HTTP/1.1 protocol, subclassed at three of its hooks:
``connection_made``, ``on_response_complete`` and ``connection_lost``; a request counts
as started when uvicorn calls the app with it (its headers are complete).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_IDLE_CONNECTIONS = 256


def protocol_class(read_timeout: float, max_idle: int = MAX_IDLE_CONNECTIONS) -> type[Any]:
    """A uvicorn HTTP protocol class with the bounds above; its ``abort_all()`` drops every
    connection still open (the end of a shutdown)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    waiting: OrderedDict[Any, None] = OrderedDict()  # connections waiting for a request, oldest first
    everyone: set[Any] = set()

    class BoundedProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        app: Any  # the ASGI app, set by uvicorn's protocol; wrapped below

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: Any = None
            app = self.app

            async def started(scope: Any, receive: Any, send: Any) -> None:
                self._busy()  # the headers are in: the request runs under the app's own limits
                await app(scope, receive, send)

            self.app = started

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            everyone.add(self)
            self._wait()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait()

        def connection_lost(self, exc: Exception | None) -> None:
            self._busy()
            everyone.discard(self)
            super().connection_lost(exc)

        def _wait(self) -> None:
            self._busy()
            while len(waiting) >= max_idle:
                next(iter(waiting))._drop()
            waiting[self] = None
            self._deadline = self.loop.call_later(read_timeout, self._drop)

        def _busy(self) -> None:
            waiting.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _drop(self) -> None:
            self._busy()
            self.transport.close()

        @staticmethod
        def abort_all() -> None:
            for connection in list(everyone):
                connection._busy()
                connection.transport.abort()

    return BoundedProtocol
