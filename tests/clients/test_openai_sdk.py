"""The official OpenAI Python SDK against rkllmd, over the Unix socket (an httpx transport) and
over TCP. Responses are also validated strictly against the SDK's types, which are generated
from OpenAI's published API schema."""
import json

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import base64

from daemon import daemon, multimodal_runs, png, qwen, vision  # noqa: F401  (pytest fixtures)


def clients(d):
    unix = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket))
    return {
        "unix": openai.OpenAI(base_url="http://rkllmd/v1", api_key="unused", http_client=unix, max_retries=0),
        "tcp": openai.OpenAI(base_url=d.base + "/v1", api_key="unused", max_retries=0),
    }


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_models_and_chat(daemon, via):  # noqa: F811
    client = clients(daemon)[via]
    models = client.models.list()
    assert [m.id for m in models.data] == ["fast"]
    reply = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens == 8
    # Strict validation of the raw JSON against the schema types.
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "Hello"}])
    ChatCompletion.model_validate(json.loads(raw.text), strict=False)


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_chat_stream(daemon, via):  # noqa: F811
    client = clients(daemon)[via]
    stream = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Tell me a story"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Tell me a story"}])
    assert whole.choices[0].message.content == text


def test_completions(daemon):  # noqa: F811
    client = clients(daemon)["unix"]
    done = client.completions.create(model="fast", prompt="Once upon a time", max_tokens=5)
    Completion.model_validate(done.model_dump())
    assert done.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="fast", prompt="Once upon a time", max_tokens=5, stream=True))
    assert streamed == done.choices[0].text


def test_errors_are_typed_sdk_exceptions(daemon):  # noqa: F811
    client = clients(daemon)["tcp"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="fast", messages=[])
    assert bad.value.body["param"] == "messages"


TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_chat_tool_calls_plain_and_streamed(qwen, via):  # noqa: F811
    client = clients(qwen)[via]
    ask = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    whole = client.chat.completions.create(model="m", messages=ask, tools=TOOLS)
    assert whole.choices[0].finish_reason == "tool_calls"
    [call] = whole.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)

    chunks = list(client.chat.completions.create(model="m", messages=ask, tools=TOOLS, stream=True))
    deltas = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert {t.index for t in deltas} == {0}
    assert "".join(t.function.name or "" for t in deltas) == "get_weather"
    assert json.loads("".join(t.function.arguments or "" for t in deltas)) == json.loads(call.function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_chat_with_an_image_url(vision):  # noqa: F811
    client = clients(vision)["unix"]
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    reply = client.chat.completions.create(model="vision-demo", max_tokens=4, messages=[{
        "role": "user",
        "content": [{"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": url}}]}])
    assert reply.choices[0].message.content
    runs = multimodal_runs(vision)
    assert [(r["n_image"], r["embed"]) for r in runs] == [(1, 196 * 1536)]
