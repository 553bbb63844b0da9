"""A backend that plays the model from a script, for tests of the agent loop and what it logs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from localassist.engine.types import ChatRequest, ChatStream, Message, StreamState, TextDelta, ToolCall


@dataclass
class ScriptedBackend:
    """Answers each request with the next scripted reply (the last one again once they run out):
    a text, a list of (name, arguments) calls, or (text, calls)."""

    replies: list
    requests: list[ChatRequest] = field(default_factory=list)
    model_name: str = "scripted"
    n_ctx: int = 4096
    load_seconds: float = 0.0

    def chat(self, request: ChatRequest) -> ChatStream:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if request.tool_choice == "none" and not isinstance(reply, str):
            reply = "final answer"
        state = StreamState(self.model_name, prompt_tokens=10)
        n = len(self.requests)

        text, calls = (reply, []) if isinstance(reply, str) else reply if isinstance(reply, tuple) else ("", reply)

        def produce(stream):
            if text:
                state.parts.append(text)
                state.completion_tokens = 3
                yield TextDelta(text)
            state.tool_calls = [
                ToolCall(f"call_{n}_{i}", name, json.dumps(args)) for i, (name, args) in enumerate(calls)
            ]
            yield state.done("tool_calls" if calls else "stop")

        return ChatStream(state, produce)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return list(range(len(text.split())))

    def count(self, messages: Sequence[Message]) -> int:
        return sum(len(m.content.split()) + 4 for m in messages)

    def close(self) -> None:
        pass
