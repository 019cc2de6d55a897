"""The official OpenAI Python SDK against rkllmd, over the Unix socket (an httpx transport) and
over TCP. Responses are also validated strictly against the SDK's types, which are generated
from OpenAI's published API schema."""
import json

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from daemon import daemon  # noqa: F401  (pytest fixture)


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
