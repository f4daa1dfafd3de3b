"""The usage meter: what it reads from each model API's responses, however the bytes are split, and that nothing it
is fed (garbage, cut-off streams, endless lines) makes it raise or grow without bound."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from crewtui.gateway import usage as usage_module
from crewtui.gateway.usage import Api, Measured, UsageMeter, api_of, estimate_input_tokens
from tests.fakemodel import Usage

SSE = "text/event-stream"
JSON = "application/json"


# -- wire shapes (as tests/fakemodel/server.py writes them) ------------------------------------------------------


def _event(name: str | None, data: dict[str, Any] | str, newline: str = "\n") -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {name}{newline}" if name else ""
    return f"{head}data: {payload}{newline}{newline}"


def anthropic_stream(
    usage: dict[str, int], pieces: list[str], model: str = "claude-fake", delta_usage: dict[str, int] | None = None
) -> str:
    """message_start (output_tokens 1, as the real API sends), a text block in pieces, message_delta, message_stop;
    cut off before message_delta when `delta_usage` is {}."""
    start = {**usage, "output_tokens": 1}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start,
    }
    out = [_event("message_start", {"type": "message_start", "message": message})]
    out.append(
        _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        out.append(_event("content_block_delta", delta))
    out.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if delta_usage == {}:
        return "".join(out)
    final = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    out.append(_event("message_delta", {**final, "usage": delta_usage if delta_usage is not None else usage}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return "".join(out)


def responses_stream(usage: dict[str, Any], model: str = "gpt-fake", done: str = "response.completed") -> str:
    seq = iter(range(1000))

    def event(data: dict[str, Any]) -> str:
        return _event(data["type"], {**data, "sequence_number": next(seq)})

    base = {"id": "resp_1", "object": "response", "created_at": 1, "model": model}
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}
    out = [
        event({"type": "response.created", "response": {**base, "status": "in_progress", "output": [], "usage": None}}),
        event({"type": "response.in_progress", "response": {**base, "status": "in_progress", "output": []}}),
        event({"type": "response.output_item.added", "output_index": 0, "item": item}),
    ]
    for piece in ["Hel", "lo ", "there"]:
        out.append(
            event(
                {
                    "type": "response.output_text.delta",
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                }
            )
        )
    out.append(event({"type": done, "response": {**base, "status": done.split(".")[1], "usage": usage}}))
    return "".join(out)


def chat_stream(final_usage: dict[str, Any] | None, model: str = "gpt-4o-fake") -> str:
    """Chat Completions chunks; with stream_options.include_usage every chunk has "usage": null and a last chunk
    with no choices carries the usage."""
    include = final_usage is not None
    out = []
    for index, piece in enumerate(["Hi", " the", "re"]):
        chunk: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "delta": {"content": piece} if index else {"role": "assistant", "content": piece}}
            ],
        }
        if include:
            chunk["usage"] = None
        out.append(_event(None, chunk))
    if include:
        last = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": []}
        out.append(_event(None, {**last, "usage": final_usage}))
    out.append(_event(None, "[DONE]"))
    return "".join(out)


def measure(api: Api, body: bytes | str, content_type: str = SSE, chunks: Iterator[bytes] | None = None) -> Measured:
    raw = body.encode() if isinstance(body, str) else body
    meter = UsageMeter(api, content_type)
    for chunk in chunks if chunks is not None else [raw]:
        meter.feed(chunk)
    return meter.result()


def byte_by_byte(raw: bytes) -> Iterator[bytes]:
    return (raw[i : i + 1] for i in range(len(raw)))


def random_splits(raw: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    at = 0
    while at < len(raw):
        size = rng.choice([1, 2, 3, 7, 16, 64, 300])
        yield raw[at : at + size]
        at += size


# -- Anthropic Messages ------------------------------------------------------------------------------------------

ANTHROPIC_USAGE = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 20,
    "output_tokens": 42,
}
ANTHROPIC_EXPECTED = Measured(input=100, output=42, cache_read=20, cache_write=5, model="claude-fake", known=True)
# Text that looks like the keys the meter looks for, and multi-byte characters to split inside.
PIECES = ["Hello", ", wörld ✔ ", 'the "usage" key ', "and the “model” one", "🎉 done"]


def test_anthropic_stream_fed_whole() -> None:
    got = measure("anthropic", anthropic_stream(ANTHROPIC_USAGE, PIECES))
    assert got == ANTHROPIC_EXPECTED
    assert got.total == 167


def test_anthropic_stream_fed_byte_by_byte() -> None:
    raw = anthropic_stream(ANTHROPIC_USAGE, PIECES).encode()
    assert measure("anthropic", raw, chunks=byte_by_byte(raw)) == ANTHROPIC_EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_anthropic_stream_fed_in_random_splits(seed: int) -> None:
    raw = anthropic_stream(ANTHROPIC_USAGE, PIECES).encode()
    assert measure("anthropic", raw, chunks=random_splits(raw, seed)) == ANTHROPIC_EXPECTED


def test_anthropic_stream_with_crlf_and_cr_line_ends() -> None:
    lf = anthropic_stream(ANTHROPIC_USAGE, PIECES).encode()
    for newline in (b"\r\n", b"\r"):
        raw = lf.replace(b"\n", newline)
        assert measure("anthropic", raw) == ANTHROPIC_EXPECTED
        assert measure("anthropic", raw, chunks=byte_by_byte(raw)) == ANTHROPIC_EXPECTED
        assert measure("anthropic", raw, chunks=random_splits(raw, 7)) == ANTHROPIC_EXPECTED


def test_data_without_a_space_after_the_colon_comments_and_other_fields() -> None:
    raw = (
        ": keep-alive\n"
        "id: 1\n"
        "retry: 3000\n"
        "event: message_start\n"
        'data:{"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}\n'
        "\n"
        ": ping\n\n"
        "event: message_delta\n"
        'data:  {"type":"message_delta","usage":{"output_tokens":9}}\n'
        "\n"
    )
    assert measure("anthropic", raw) == Measured(input=3, output=9, model="m", known=True)


def test_multi_line_data_is_joined_with_newlines() -> None:
    raw = (
        "event: message_delta\n"
        'data: {"type": "message_delta",\n'
        'data:  "usage": {"output_tokens": 9,\n'
        'data: "input_tokens": 4}}\n'
        "\n"
    )
    assert measure("anthropic", raw) == Measured(input=4, output=9, known=True)
    # a CRLF split between chunks ends one line, not two (an empty second line would end the event early)
    crlf = raw.replace("\n", "\r\n").encode()
    assert measure("anthropic", crlf, chunks=byte_by_byte(crlf)) == Measured(input=4, output=9, known=True)


def test_anthropic_stream_cut_off_before_message_delta_keeps_message_start_counts() -> None:
    raw = anthropic_stream(ANTHROPIC_USAGE, PIECES, delta_usage={})
    expected = Measured(input=100, output=1, cache_read=20, cache_write=5, model="claude-fake", known=True)
    assert measure("anthropic", raw) == expected
    # cut inside the message_delta line: the half line is not read
    whole = anthropic_stream(ANTHROPIC_USAGE, PIECES)
    cut = whole.index('"output_tokens": 42') + len('"output_tokens": 4')
    assert measure("anthropic", whole[:cut]) == expected


def test_result_at_any_point_is_usage_so_far() -> None:
    raw = anthropic_stream(ANTHROPIC_USAGE, PIECES).encode()
    meter = UsageMeter("anthropic", SSE)
    outputs = []
    for chunk in byte_by_byte(raw):
        meter.feed(chunk)
        outputs.append(meter.result().output)
    assert outputs[0] == 0
    assert outputs == sorted(outputs)
    assert set(outputs) == {0, 1, 42}
    # the message_delta data line is counted once it has ended, before the blank line closing the event
    delta_end = raw.index(b"\n", raw.index(b"event: message_delta\ndata:") + len("event: message_delta\n"))
    assert outputs[delta_end - 1] == 1
    assert outputs[delta_end] == 42
    assert meter.result() == ANTHROPIC_EXPECTED


def test_a_newer_message_delta_with_input_and_cache_counts_updates_them() -> None:
    delta = {"input_tokens": 110, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 30, "output_tokens": 8}
    got = measure("anthropic", anthropic_stream(ANTHROPIC_USAGE, PIECES, delta_usage=delta))
    assert got == Measured(input=110, output=8, cache_read=0, cache_write=30, model="claude-fake", known=True)


def test_only_events_that_can_matter_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real = usage_module._decode

    def counting(payload: bytes) -> dict[str, Any] | None:
        decoded.append(payload)
        return real(payload)

    monkeypatch.setattr(usage_module, "_decode", counting)
    raw = anthropic_stream(ANTHROPIC_USAGE, PIECES * 20)
    assert measure("anthropic", raw) == ANTHROPIC_EXPECTED
    assert [json.loads(p)["type"] for p in decoded] == ["message_start", "message_delta"]
    assert all(p.startswith(b"{") for p in decoded)  # the space after "data:" is not part of the data

    decoded.clear()
    raw = chat_stream({"prompt_tokens": 10, "completion_tokens": 3})
    assert measure("chat", raw).output == 3
    assert len(decoded) == 2  # the first chunk (for the model) and the one with the usage


def test_fake_model_usage_shapes() -> None:
    """The usage objects exactly as tests/fakemodel sends them read back as the Usage the fake was scripted with."""
    scripted = Usage(input=250, output=17, cache_read=1200, cache_write=64)
    expected = Measured(input=250, output=17, cache_read=1200, cache_write=64, model="fake-model", known=True)
    assert measure("anthropic", anthropic_stream(scripted.anthropic(), ["ok"], model="fake-model")) == expected
    assert measure("responses", responses_stream(scripted.responses(), model="fake-model")) == expected


# -- OpenAI Responses --------------------------------------------------------------------------------------------


def test_responses_stream_normalises_cached_tokens() -> None:
    wire = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 800},
        "output_tokens": 55,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 1055,
    }
    raw = responses_stream(wire).encode()
    expected = Measured(input=200, output=55, cache_read=800, cache_write=0, model="gpt-fake", known=True)
    assert measure("responses", raw) == expected
    assert measure("responses", raw, chunks=byte_by_byte(raw)) == expected
    assert measure("responses", raw, chunks=random_splits(raw, 3)) == expected
    assert expected.total == 1055


@pytest.mark.parametrize("done", ["response.incomplete", "response.failed"])
def test_responses_usage_on_incomplete_and_failed(done: str) -> None:
    wire = {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 6}
    assert measure("responses", responses_stream(wire, done=done)) == Measured(40, 6, 0, 0, "gpt-fake", True)


def test_responses_stream_cut_off_before_completed_has_the_model_but_no_usage() -> None:
    raw = responses_stream({"input_tokens": 1, "output_tokens": 1})
    cut = raw[: raw.index("event: response.completed")]
    assert measure("responses", cut) == Measured(model="gpt-fake", known=False)


# -- Chat Completions --------------------------------------------------------------------------------------------


def test_chat_stream_with_include_usage() -> None:
    wire = {
        "prompt_tokens": 900,
        "completion_tokens": 31,
        "total_tokens": 931,
        "prompt_tokens_details": {"cached_tokens": 512},
    }
    raw = chat_stream(wire).encode()
    expected = Measured(input=388, output=31, cache_read=512, cache_write=0, model="gpt-4o-fake", known=True)
    assert measure("chat", raw) == expected
    assert measure("chat", raw, chunks=byte_by_byte(raw)) == expected
    crlf = raw.replace(b"\n", b"\r\n")
    assert measure("chat", crlf, chunks=random_splits(crlf, 11)) == expected


def test_chat_stream_without_include_usage_is_unknown_but_names_the_model() -> None:
    assert measure("chat", chat_stream(None)) == Measured(model="gpt-4o-fake", known=False)


# -- non-streamed JSON -------------------------------------------------------------------------------------------

JSON_BODIES: list[tuple[Api, dict[str, Any], Measured]] = [
    (
        "anthropic",
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-fake",
            "content": [{"type": "text", "text": 'the "usage" and "model" words'}],
            "stop_reason": "end_turn",
            "usage": ANTHROPIC_USAGE,
        },
        ANTHROPIC_EXPECTED,
    ),
    (
        "responses",
        {
            "id": "resp_1",
            "object": "response",
            "model": "gpt-fake",
            "output": [],
            "usage": {
                "input_tokens": 130,
                "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10},
                "output_tokens": 9,
            },
        },
        Measured(input=20, output=9, cache_read=100, cache_write=10, model="gpt-fake", known=True),
    ),
    (
        "chat",
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 0}},
        },
        Measured(input=12, output=2, model="gpt-4o-fake", known=True),
    ),
]


@pytest.mark.parametrize(("api", "body", "expected"), JSON_BODIES, ids=[b[0] for b in JSON_BODIES])
def test_json_body(api: Api, body: dict[str, Any], expected: Measured) -> None:
    raw = json.dumps(body).encode()
    assert measure(api, raw, content_type="application/json; charset=utf-8") == expected
    assert measure(api, raw, content_type=JSON, chunks=byte_by_byte(raw)) == expected


def test_json_body_is_parsed_again_when_more_arrives() -> None:
    raw = json.dumps(JSON_BODIES[0][1]).encode()
    meter = UsageMeter("anthropic", JSON)
    meter.feed(raw[:50])
    assert meter.result() == Measured()
    meter.feed(raw[50:])
    assert meter.result() == ANTHROPIC_EXPECTED
    assert meter.result() == ANTHROPIC_EXPECTED
    meter.feed(b"trailing garbage")
    assert meter.result() == Measured()


def test_json_body_over_8_mib_is_not_measured() -> None:
    body = {"model": "m", "usage": {"input_tokens": 1, "output_tokens": 1}, "pad": "x" * (8 << 20)}
    raw = json.dumps(body).encode()
    meter = UsageMeter("anthropic", JSON)
    for at in range(0, len(raw), 1 << 20):
        meter.feed(raw[at : at + (1 << 20)])
    assert meter.result() == Measured()
    assert len(meter._body) == 0


def test_an_error_body_has_no_usage() -> None:
    raw = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    assert measure("anthropic", raw, content_type=JSON) == Measured()


def test_content_type_is_read_case_insensitively() -> None:
    raw = anthropic_stream(ANTHROPIC_USAGE, PIECES)
    assert measure("anthropic", raw, content_type="Text/Event-Stream; charset=utf-8") == ANTHROPIC_EXPECTED
    assert measure("anthropic", raw, content_type=JSON) == Measured()  # not a JSON body: unknown, no error


# -- garbage and bounds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["anthropic", "responses", "chat"])
@pytest.mark.parametrize("content_type", [SSE, JSON, ""])
def test_random_garbage_never_raises_and_stays_unknown(api: Api, content_type: str) -> None:
    rng = random.Random(f"{api}{content_type}")
    raw = bytes(rng.getrandbits(8) for _ in range(200_000))
    assert measure(api, raw, content_type=content_type, chunks=random_splits(raw, 5)) == Measured()


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        '{"usage": ',
        "[1, 2, 3]",
        '"usage"',
        '{"usage": 5, "model": 7}',
        '{"usage": {"input_tokens": "100", "output_tokens": null}}',
        '{"usage": {"input_tokens": -3, "output_tokens": true}}',
        '{"message": "x", "usage": []}',
        '{"usage": {"output_tokens": ' + "9" * 5000 + "}}",  # over Python's int-from-string limit
        "[" * 100_000 + '"usage"' + "]" * 100_000,
        '{"usage": {"input_tokens": 1}}'.replace("1", "\udcff"),
    ],
)
def test_bad_data_payloads_leave_usage_unknown(data: str) -> None:
    raw = f"event: message_delta\ndata: {data}\n\n".encode(errors="surrogateescape")
    for api in ("anthropic", "responses", "chat"):
        assert measure(api, raw) == Measured()
        assert measure(api, raw[:-1]) == Measured()  # pending at result() time


def test_an_endless_line_is_dropped_and_the_stream_recovers() -> None:
    meter = UsageMeter("anthropic", SSE)
    piece = b"x" * (64 << 10)
    for _ in range(80):  # 5 MiB without a line end
        meter.feed(piece)
        assert len(meter._partial) <= 1 << 20
    assert meter.result() == Measured()
    meter.feed(b"still the same line\n\n")
    meter.feed(anthropic_stream(ANTHROPIC_USAGE, PIECES).encode())
    assert meter.result() == ANTHROPIC_EXPECTED


def test_the_tail_of_an_endless_line_is_not_read_as_a_line_of_its_own() -> None:
    meter = UsageMeter("anthropic", SSE)
    meter.feed(b": a comment, " + b"x" * (2 << 20))
    meter.feed(b'data: {"usage": {"output_tokens": 5}}\n\n')
    assert meter.result() == Measured()


def test_an_endless_data_line_is_dropped() -> None:
    meter = UsageMeter("anthropic", SSE)
    meter.feed(b'data: {"usage": {"output_tokens": 5}, "pad": "')
    for _ in range(80):
        meter.feed(b"y" * (64 << 10))
    meter.feed(b'"}\n\n')
    assert meter.result() == Measured()
    assert len(meter._partial) == 0


def test_an_event_of_endless_data_lines_is_dropped() -> None:
    meter = UsageMeter("anthropic", SSE)
    meter.feed(b'data: {"usage": {"output_tokens": 5},\n')
    line = b"data: " + b"z" * 1000 + b"\n"
    for _ in range(5000):  # 5 MB of data lines in one event
        meter.feed(line)
    assert sum(len(d) for d in meter._data) <= 1 << 20
    meter.feed(b'data: "x": 1}\n\n')
    assert meter.result() == Measured()
    meter.feed(b'data: {"usage": {"output_tokens": 5}}\n\n')
    assert meter.result() == Measured(output=5, known=True)


# -- paths and estimates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/messages", "anthropic"),
        ("/messages", "anthropic"),
        ("/v1/messages?beta=true", "anthropic"),
        ("/v1/messages/", "anthropic"),
        ("/v1/responses", "responses"),
        ("/responses", "responses"),
        ("/v1/chat/completions", "chat"),
        ("/chat/completions", "chat"),
        ("/v1/messages/count_tokens", None),
        ("/v1/messages/count_tokens?beta=true", None),
        ("/v1/models", None),
        ("/models", None),
        ("/v1/responses/resp_123", None),
        ("/v1/completions", None),
        ("/v2/messages", None),
        ("/v1", None),
        ("/", None),
        ("", None),
        ("/v1/v1/messages", None),
        ("/s/token/v1/messages", None),
    ],
)
def test_api_of(path: str, api: Api | None) -> None:
    assert api_of(path) == api


def test_estimate_input_tokens() -> None:
    assert estimate_input_tokens(b"") == 1
    assert estimate_input_tokens(b"abc") == 1
    assert estimate_input_tokens(b"abcd") == 1
    assert estimate_input_tokens(b"abcde") == 2
    assert estimate_input_tokens(b"x" * 4000) == 1000


def test_measured_total() -> None:
    assert Measured().total == 0
    assert Measured(input=1, output=2, cache_read=3, cache_write=4).total == 10
