"""LangChain's OpenAI and Ollama chat models (langchain-openai's ChatOpenAI with a base_url,
langchain-ollama's ChatOllama) against rkllmd, as a user of a local server sets them up: plain,
streamed, tools bound with the framework's own bind_tools, the Responses API and embeddings
(OpenAIEmbeddings, OllamaEmbeddings), over TCP and
over the Unix socket (through the httpx client each accepts)."""
import math

import httpx
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from daemon import qwen  # noqa: F401  (pytest fixture)

QUESTION = "Is 17 prime?"
TOOL_QUESTION = "What is the weather in Paris? Use get_weather."


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def chat_openai(d, via, **kw):
    if via == "tcp":
        return ChatOpenAI(model="m", base_url=d.base + "/v1", api_key="unused", max_retries=0, **kw)
    unix = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket))
    return ChatOpenAI(model="m", base_url="http://rkllmd/v1", api_key="unused", max_retries=0,
                      http_client=unix, **kw)


def chat_ollama(d, via, **kw):
    if via == "tcp":
        return ChatOllama(model="m", base_url=d.base, **kw)
    # ChatOllama hands client_kwargs to ollama.Client, which hands them to httpx.Client.
    return ChatOllama(model="m", base_url="http://rkllmd",
                      client_kwargs={"transport": httpx.HTTPTransport(uds=d.socket)}, **kw)


@pytest.mark.parametrize("via", ["tcp", "unix"])
@pytest.mark.parametrize("make", [chat_openai, chat_ollama], ids=["ChatOpenAI", "ChatOllama"])
def test_invoke_and_stream_give_the_same_answer(qwen, make, via):  # noqa: F811
    llm = make(qwen, via)
    whole = llm.invoke(QUESTION)
    assert isinstance(whole, AIMessage)
    assert whole.content and "think>" not in whole.content
    assert whole.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream(QUESTION))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == whole.content


@pytest.mark.parametrize("via", ["tcp", "unix"])
@pytest.mark.parametrize("make", [chat_openai, chat_ollama], ids=["ChatOpenAI", "ChatOllama"])
def test_bound_tools_come_back_as_tool_calls(qwen, make, via):  # noqa: F811
    reply = make(qwen, via).bind_tools([get_weather]).invoke(TOOL_QUESTION)
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]
    assert isinstance(reply.tool_calls[0]["args"], dict)
    assert reply.tool_calls[0]["id"]


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_chat_openai_over_the_responses_api(qwen, via):  # noqa: F811
    llm = chat_openai(qwen, via, use_responses_api=True)
    whole = llm.invoke(QUESTION)
    assert whole.text and "think>" not in whole.text
    streamed = "".join(c.text for c in llm.stream(QUESTION))
    assert streamed == whole.text
    reply = llm.bind_tools([get_weather]).invoke(TOOL_QUESTION)
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]


def openai_embeddings(d, via):
    # check_embedding_ctx_length=False: otherwise the class tokenizes with tiktoken first, whose
    # encodings are downloaded at run time, and sends token arrays (which rkllmd refuses: it has
    # no tokenizer to decode them). Users of local OpenAI-compatible servers set it the same way.
    kw = dict(model="m", api_key="unused", max_retries=0, check_embedding_ctx_length=False)
    if via == "tcp":
        return OpenAIEmbeddings(base_url=d.base + "/v1", **kw)
    unix = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket))
    return OpenAIEmbeddings(base_url="http://rkllmd/v1", http_client=unix, **kw)


def ollama_embeddings(d, via):
    if via == "tcp":
        return OllamaEmbeddings(model="m", base_url=d.base)
    return OllamaEmbeddings(model="m", base_url="http://rkllmd",
                            client_kwargs={"transport": httpx.HTTPTransport(uds=d.socket)})


@pytest.mark.parametrize("via", ["tcp", "unix"])
@pytest.mark.parametrize("make", [openai_embeddings, ollama_embeddings],
                         ids=["OpenAIEmbeddings", "OllamaEmbeddings"])
def test_embeddings_of_documents_and_queries(qwen, make, via):  # noqa: F811
    emb = make(qwen, via)
    docs = emb.embed_documents(["first", "second"])
    assert len(docs) == 2 and docs[0] != docs[1]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in docs)
    assert emb.embed_query("first") == pytest.approx(docs[0], abs=1e-6)
