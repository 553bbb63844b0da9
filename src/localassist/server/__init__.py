"""`localassist serve`: an OpenAI-compatible HTTP server over the same core as ask and chat.

Every generation goes through ``Backend.chat(ChatRequest) -> ChatStream``; this package
adds what a server needs around it: the wire format (``wire``), API keys (``keys``), one
inference worker per model behind a bounded queue (``worker``), per-key limits
(``limits``), Prometheus metrics (``metrics``), the call log (``calllog``), the Starlette
app (``app``) and the process around it (``run``). Nothing here imports Typer or Rich,
and nothing imports Starlette or uvicorn until a server is started.
"""
