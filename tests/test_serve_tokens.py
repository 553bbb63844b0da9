"""`localassist serve`'s token endpoints (llama-server's /tokenize, /detokenize and
/apply-template) on a real server process running the starter model: the ids are
llama.cpp's own (the ``vocab`` fixture, which shares no code with localassist), the
rendered prompt counts to exactly the prompt tokens a chat completion reports, and a
remote backend on this server counts exactly, not by estimate."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from localassist.engine.remote import RemoteBackend
from localassist.engine.types import Message
from serverproc import ServerProc

pytestmark = pytest.mark.model
MODEL = "gemma-3-270m-q4_k_m"
KEY = "tok-" + "k" * 20
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "Which colour has the sky on a clear day? <end_of_turn> stays text."},
]


@pytest.fixture(scope="module")
def server(starter_model, tmp_path_factory):
    """Chat and embeddings from the starter model, a key required."""
    proc = ServerProc(
        tmp_path_factory.mktemp("serve-home"),
        ["-m", str(starter_model), "--embed", str(starter_model), "--threads", "1", "--ctx", "1024"],
        env={"LOCALASSIST_API_KEYS": f"tests:{KEY}"},
    )
    yield proc.wait_ready()
    assert proc.stop() == 0, proc.stderr


def post(server, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    return server.post(path, body, AUTH if headers is None else headers)


def test_tokenize_gives_llama_cpps_own_ids_with_llama_servers_options(server, vocab):
    text = "Grüße, <start_of_turn>Ada! 12345"
    status, body = post(server, "/tokenize", {"content": text})
    assert status == 200, body
    assert body == {"tokens": vocab.tokenize(text.encode(), add_bos=False, special=True)}  # llama-server's defaults
    for add_special in (False, True):
        for parse_special in (False, True):
            asked = {"content": text, "add_special": add_special, "parse_special": parse_special, "model": MODEL}
            status, body = post(server, "/tokenize", asked)
            assert body["tokens"] == vocab.tokenize(text.encode(), add_bos=add_special, special=parse_special)
    status, body = post(server, "/tokenize", {"content": text, "with_pieces": True})
    pieces = body["tokens"]
    assert [p["id"] for p in pieces] == vocab.tokenize(text.encode(), add_bos=False, special=True)
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert joined == text.encode()


def test_detokenize_turns_ids_back_into_the_text_and_refuses_ids_the_model_lacks(server, vocab):
    text = "A round trip: naïve café, 42 tokens?"
    ids = vocab.tokenize(text.encode(), add_bos=False, special=False)
    assert post(server, "/detokenize", {"tokens": ids}) == (200, {"content": text})
    status, body = post(server, "/detokenize", {"tokens": [ids[0], vocab.n_vocab()]})
    assert status == 400 and body["error"]["param"] == "tokens[1]", body
    status, body = post(server, "/detokenize", {"tokens": [1, "2"]})
    assert status == 400 and body["error"]["code"] == "invalid_type", body


def test_the_applied_template_counts_to_the_prompt_tokens_of_a_chat_completion(server):
    messages = [MESSAGES[0], {"role": "user", "content": "Which colour has grass?"}]
    status, rendered = post(server, "/apply-template", {"messages": messages})
    assert status == 200 and rendered["prompt"].rstrip().endswith("model"), rendered
    tokenize = {"content": rendered["prompt"], "add_special": True, "parse_special": True}
    counted = len(post(server, "/tokenize", tokenize)[1]["tokens"])
    status, reply = post(server, "/v1/chat/completions", {"model": MODEL, "messages": messages, "max_tokens": 1})
    assert status == 200, reply
    assert counted == reply["usage"]["prompt_tokens"]  # one BOS, although the template writes one too


def test_a_remote_backend_counts_messages_exactly_as_the_chat_endpoint_evaluates_them(server, monkeypatch):
    # the pasted control-token text is message content: evaluated as text, so counted as text
    status, tokenized = post(server, "/tokenize", {"messages": MESSAGES})
    assert status == 200, tokenized
    status, reply = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 1})
    assert status == 200, reply
    assert len(tokenized["tokens"]) == reply["usage"]["prompt_tokens"]
    monkeypatch.setenv("TOKENS_TEST_KEY", KEY)
    backend = RemoteBackend(server.url, key_env="TOKENS_TEST_KEY")
    try:
        assert backend.exact_tokens and "exact" in backend.info().details["tokens"]
        asked = [Message(m["role"], m["content"]) for m in MESSAGES]
        assert backend.count(asked) == reply["usage"]["prompt_tokens"]
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/tokenize", {}, 400, "missing_required_parameter"),
        ("/tokenize", {"messages": MESSAGES, "tools": [{"type": "function"}]}, 400, "not_supported"),
        ("/tokenize", {"content": 5}, 400, "invalid_type"),
        ("/tokenize", {"content": "hi", "model": "nope"}, 404, "model_not_found"),
        ("/detokenize", {"tokens": "1 2"}, 400, "invalid_type"),
        ("/apply-template", {"messages": []}, 400, "invalid_value"),
        ("/apply-template", {"messages": MESSAGES, "tools": [{"type": "function"}]}, 400, "not_supported"),
    ],
)
def test_bad_token_requests_are_400_or_404_with_a_string_code(server, path, body, status, code):
    got, answer = post(server, path, body)
    assert (got, answer["error"]["code"]) == (status, code), answer


def test_token_endpoints_need_a_key_like_every_api_endpoint(server):
    for path, body in (("/tokenize", {"content": "hi"}), ("/detokenize", {"tokens": [1]}), ("/apply-template", {})):
        status, answer = post(server, path, body, headers={})
        assert (status, answer["error"]["code"]) == (401, "invalid_api_key")


def test_fuzzed_token_requests_never_get_a_500_or_a_traceback(server):
    pytest.importorskip("hypothesis")
    import json

    import httpx
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    scalars = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | values},
        optional={"content": st.text(max_size=40) | values},
    )
    fields = {
        "model": st.just(MODEL) | values,
        "content": st.text(max_size=40) | values,
        "messages": st.lists(message, max_size=3) | values,
        "tokens": st.lists(st.integers(-5, 300_000), max_size=5) | values,
        "add_special": st.booleans() | values,
        "parse_special": st.booleans() | values,
        "with_pieces": st.booleans() | values,
        "tools": values,
    }
    bodies = st.fixed_dictionaries({}, optional=fields).map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64)
    paths = st.sampled_from(["/tokenize", "/detokenize", "/apply-template"])
    http = httpx.Client(base_url=server.url, timeout=60, headers=AUTH)
    statuses: list[int] = []

    @settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(path=paths, body=bodies)
    # well-formed requests too, whatever the random draw: answers are checked, not only refusals
    @example(path="/tokenize", body=json.dumps({"content": "Hello", "with_pieces": True}).encode())
    @example(path="/detokenize", body=json.dumps({"tokens": [1, 2, 3]}).encode())
    @example(path="/apply-template", body=json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode())
    def check(path: str, body: bytes) -> None:
        resp = http.post(path, content=body)
        statuses.append(resp.status_code)
        assert resp.status_code < 500 and "Traceback" not in resp.text, (path, body, resp.text)
        if resp.status_code >= 400:
            assert isinstance(resp.json()["error"]["code"], str), resp.text
        else:
            assert set(resp.json()) <= {"tokens", "content", "prompt"}, resp.text

    try:
        check()
    finally:
        http.close()
    assert {200, 400} <= set(statuses)  # the fuzz reached both the answers and the validation
