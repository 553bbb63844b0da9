"""The Starlette application: which URL goes to which endpoint (``routes``), and the
server's life around them (load at start, stop and free at the end).

The app keeps its ``ServerState`` as ``app.state.server``; the endpoints read it there.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from localassist.server import routes
from localassist.server.routes import api
from localassist.server.state import ServerState

ROUTES = [
    Route("/v1/chat/completions", api("chat.completions", routes.chat_completions), methods=["POST"]),
    Route("/v1/completions", api("completions", routes.completions), methods=["POST"]),
    Route("/v1/embeddings", api("embeddings", routes.embeddings), methods=["POST"]),
    Route("/v1/models", api("models", routes.models), methods=["GET"]),
    Route("/v1/models/{model:path}", api("models", routes.models), methods=["GET"]),
    Route("/metrics", api("metrics", routes.metrics), methods=["GET"]),
    Route("/tokenize", api("tokenize", routes.tokenize), methods=["POST"]),
    Route("/detokenize", api("detokenize", routes.detokenize), methods=["POST"]),
    Route("/apply-template", api("apply-template", routes.apply_template), methods=["POST"]),
    Route("/health", routes.health, methods=["GET"]),
    Route("/v1/health", routes.health, methods=["GET"]),
]


def web_routes() -> list[Route]:
    """The web chat: its page, its files and its JSON API (web/routes.py)."""
    from localassist.web import routes as page

    def web(endpoint: str, handler: page.Handler, **kw: bool) -> Any:
        return page.web(endpoint, handler, **kw)

    conversation = "/web/api/conversations/{cid}"
    return [
        Route("/", page.page, methods=["GET"]),
        Route("/assets/{name}", page.asset, methods=["GET"]),
        Route("/web/api/session", page.session, methods=["GET"]),
        Route("/web/api/signin", page.signin, methods=["POST"]),
        Route("/web/api/signout", web("signout", page.signout, change=True), methods=["POST"]),
        Route("/web/api/conversations", web("conversations", page.list_conversations), methods=["GET"]),
        Route(conversation, web("conversation", page.get_conversation), methods=["GET"]),
        Route(conversation, web("conversation.update", page.patch_conversation, change=True), methods=["PATCH"]),
        Route(conversation, web("conversation.delete", page.delete_conversation, change=True), methods=["DELETE"]),
        Route("/web/api/chat", web("chat", page.chat, change=True, model=True), methods=["POST"]),
        Route(f"{conversation}/files", web("files", page.upload, change=True, model=True), methods=["POST"]),
        Route(f"{conversation}/summarize", web("summarize", page.summarize, change=True, model=True), methods=["POST"]),
    ]


def create_app(state: ServerState) -> Starlette:
    app_routes = [*ROUTES, *web_routes()] if state.web is not None else ROUTES
    app = Starlette(routes=app_routes, lifespan=lifespan, exception_handlers={HTTPException: routes.http_error})
    app.state.server = state
    return app


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state: ServerState = app.state.server
    state.start_loading(asyncio.get_running_loop())
    try:
        yield
    finally:
        state.cancel_all("shutdown")
        await anyio.to_thread.run_sync(state.close)
        # the rows of generations cancelled last were queued on this loop as their workers
        # stopped, before this line runs: now the call log writes them and closes
        await anyio.to_thread.run_sync(state.close_log)
        if state.left_running:
            # a model still inside llama.cpp: the interpreter's exit tears down what that
            # thread runs on (it can die of SIGSEGV). Every response has ended and the
            # call log is closed, so leave now; the system frees the model's memory.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
