"""OpenAI's Responses API (`POST /v1/responses`) against OpenAI's published schema and the
official SDK: every body and every streamed event is validated with jsonschema against the
`Response` and `ResponseStreamEvent` schemas vendored in schemas/ (see the file's $comment),
and `client.responses.create(...)` runs plain, streamed and with tools, over the Unix socket
(an httpx transport) and over TCP."""
import base64
import json
import os

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response

from daemon import Daemon, multimodal_runs, png, vision  # noqa: F401  (vision: a pytest fixture)

SCHEMAS = os.path.join(os.path.dirname(__file__), "schemas", "openai-responses.json")

TOOLS = [{
    "type": "function", "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def validator(name):
    with open(SCHEMAS) as f:
        doc = json.load(f)
    doc["$ref"] = f"#/components/schemas/{name}"
    return jsonschema.Draft202012Validator(doc)


RESPONSE = validator("Response")
EVENT = validator("ResponseStreamEvent")


def event_schema(kind):
    """The ResponseStreamEvent branch for an event type, so a failure names its real cause."""
    with open(SCHEMAS) as f:
        schemas = json.load(f)["components"]["schemas"]
    for name, schema in schemas.items():
        if kind in schema.get("properties", {}).get("type", {}).get("enum", []) and name.endswith("Event"):
            return validator(name)
    raise AssertionError(f"no schema for event type {kind}")


def check(v, instance):
    if v is EVENT:
        check(event_schema(instance["type"]), instance)
    errors = sorted(v.iter_errors(instance), key=lambda e: e.path)
    assert not errors, f"{instance}\n" + "\n".join(e.message for e in errors[:5])


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A thinking Qwen3 model under rkllmd's own template, so tools and reasoning both show."""
    model = tmp_path_factory.mktemp("model") / "m.rkllm"
    model.write_text("rkllm-sim 1\nname = m\nthinking = 1\nanswer_tokens_min = 5\nanswer_tokens_max = 12\n")
    d = Daemon(model=str(model), extra=("--chat-template", "qwen3"))
    yield d
    d.stop()


def clients(d):
    unix = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket))
    return {
        "unix": openai.OpenAI(base_url="http://rkllmd/v1", api_key="unused", http_client=unix, max_retries=0),
        "tcp": openai.OpenAI(base_url=d.base + "/v1", api_key="unused", max_retries=0),
    }


def raw_events(d, body):
    with httpx.Client(transport=httpx.HTTPTransport(uds=d.socket), timeout=30) as c:
        r = c.post("http://rkllmd/v1/responses", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    events = []
    for block in blocks:
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events


BODIES = [
    {"input": "Is 17 prime?"},
    {"input": "Is 17 prime?", "reasoning": {"effort": "none"}, "instructions": "Be brief."},
    {"input": "Is 17 prime?", "max_output_tokens": 4, "reasoning": {"effort": "none"}},
    {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris? Use get_weather."}]}],
     "tools": TOOLS, "temperature": 0.5, "top_p": 0.9},
    {"input": [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ], "tools": TOOLS, "tool_choice": "auto", "store": False},
]


@pytest.mark.parametrize("body", BODIES)
def test_bodies_and_events_validate_against_openais_schema(qwen, body):
    with httpx.Client(transport=httpx.HTTPTransport(uds=qwen.socket), timeout=30) as c:
        r = c.post("http://rkllmd/v1/responses", json=body)
    assert r.status_code == 200, r.text
    check(RESPONSE, r.json())
    events = raw_events(qwen, body)
    for e in events:
        check(EVENT, e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert [i["type"] for i in events[-1]["response"]["output"]] == [i["type"] for i in r.json()["output"]]


def test_a_failed_stream_validates_too(tmp_path):
    model = tmp_path / "slow.rkllm"
    model.write_text("rkllm-sim 1\nname = slow\nanswer_tokens_min = 300\nanswer_tokens_max = 300\ndecode_us_per_token = 10000\n")
    d = Daemon(model=str(model), extra=("--request-timeout", "0.3"))
    try:
        events = raw_events(d, {"input": "go"})
        for e in events:
            check(EVENT, e)
        assert events[-1]["type"] == "response.failed"
    finally:
        d.stop()


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_the_sdk_plain_streamed_and_with_tools(qwen, via):
    client = clients(qwen)[via]
    r = client.responses.create(model="m", input="Is 17 prime?", instructions="Answer.")
    assert isinstance(r, Response)
    assert r.status == "completed"
    assert [i.type for i in r.output] == ["reasoning", "message"]
    assert r.output_text and "think>" not in r.output_text
    assert r.usage.output_tokens > 0 and r.usage.input_tokens_details.cached_tokens == 0

    stream = client.responses.create(model="m", input="Is 17 prime?", stream=True,
                                     reasoning={"effort": "none"})
    events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == text

    r = client.responses.create(model="m", input="What is the weather in Paris? Use get_weather.",
                                tools=TOOLS)
    calls = [i for i in r.output if i.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert isinstance(json.loads(calls[0].arguments), dict)
    r = client.responses.create(model="m", tools=TOOLS, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
         "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ])
    # (The simulator calls again whenever a tool's name follows the definitions, as the rendered
    # call in the history does; the request's shape is what is checked here.)
    assert r.status == "completed" and r.output


def test_the_sdk_sees_previous_response_id_refused(qwen):
    client = clients(qwen)["unix"]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="hi", previous_response_id="resp_1")
    assert "keeps no responses" in e.value.message


def test_the_sdk_sends_an_input_image(vision):  # noqa: F811
    client = clients(vision)["unix"]
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    raw = client.responses.with_raw_response.create(model="vision-demo", max_output_tokens=4, input=[{
        "role": "user",
        "content": [{"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": url, "detail": "auto"}]}])
    check(RESPONSE, json.loads(raw.text))
    r = raw.parse()
    assert isinstance(r, Response)
    assert r.output_text
    runs = multimodal_runs(vision)
    assert [(r["n_image"], r["embed"]) for r in runs] == [(1, 196 * 1536)]
