"""Embeddings through the official clients, unmodified: the OpenAI SDK's
`client.embeddings.create` (which asks for base64 by default and decodes it) and the ollama
client's `embed`, over the Unix socket and TCP. The OpenAI body is also validated against
OpenAI's published `CreateEmbeddingResponse` schema (openai_schema/, third-party)."""
import json
import math
import os

import httpx
import jsonschema
import ollama
import openai
import pytest

from daemon import daemon  # noqa: F401  (pytest fixture)

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "openai_schema", "embeddings.json")


def openai_client(d, via):
    if via == "unix":
        http = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket))
        return openai.OpenAI(base_url="http://rkllmd/v1", api_key="unused", http_client=http,
                             max_retries=0)
    return openai.OpenAI(base_url=d.base + "/v1", api_key="unused", max_retries=0)


def ollama_client(d, via):
    if via == "unix":
        return ollama.Client(host="http://rkllmd", transport=httpx.HTTPTransport(uds=d.socket))
    return ollama.Client(host=d.base)


def unit(v):
    return abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-5


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_openai_sdk_embeddings_create(daemon, via):  # noqa: F811
    client = openai_client(daemon, via)
    batch = client.embeddings.create(model="fast", input=["first", "second"])
    assert [e.index for e in batch.data] == [0, 1]
    assert len(batch.data[0].embedding) == 1536 and unit(batch.data[0].embedding)
    assert batch.data[0].embedding != batch.data[1].embedding
    assert batch.usage.prompt_tokens > 0 and batch.usage.total_tokens == batch.usage.prompt_tokens
    floats = client.embeddings.create(model="fast", input="first", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(batch.data[0].embedding, abs=1e-6)
    short = client.embeddings.create(model="fast", input="first", dimensions=64)
    assert len(short.data[0].embedding) == 64 and unit(short.data[0].embedding)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="fast", input=[[1, 2, 3]])
    assert "token arrays" in str(err.value)


def test_the_body_validates_against_openais_schema(daemon):  # noqa: F811
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        spec = json.load(f)
    schema = dict(spec, **{"$ref": "#/components/schemas/CreateEmbeddingResponse"})
    client = openai_client(daemon, "tcp")
    raw = client.embeddings.with_raw_response.create(model="fast", input=["a", "b"],
                                                     encoding_format="float")
    body = json.loads(raw.text)
    jsonschema.validate(body, schema)
    # The validator bites: a body without usage is refused.
    del body["usage"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_ollama_client_embed(daemon, via):  # noqa: F811
    client = ollama_client(daemon, via)
    r = client.embed(model="fast", input=["first", "second"])
    assert len(r.embeddings) == 2 and all(unit(v) for v in r.embeddings)
    assert r.embeddings[0] != r.embeddings[1]
    assert r.prompt_eval_count > 0 and r.total_duration > 0
    one = client.embed(model="fast", input="first")
    assert one.embeddings[0] == pytest.approx(r.embeddings[0], abs=1e-6)
    legacy = client.embeddings(model="fast", prompt="first")
    assert list(legacy.embedding) == pytest.approx(r.embeddings[0], abs=1e-6)
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="nope", input="x")
    assert err.value.status_code == 404
