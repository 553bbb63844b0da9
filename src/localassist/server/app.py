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


def create_app(state: ServerState) -> Starlette:
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: routes.http_error})
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
