"""LiteLLM against rkllmd, as its users point it at a local server: `openai/<model>` with an
api_base (the OpenAI-compatible path), `ollama_chat/<model>` (its Ollama /api/chat path), and
its Responses call. Plain, streamed and tool calls, embeddings through both, and the typed ContextWindowExceededError it
raises only when an over-long prompt's message uses OpenAI's wording. LiteLLM speaks TCP only."""
import math
import os

# Keep LiteLLM off the network: its price map comes from the package, not a download.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
import pytest  # noqa: E402

from daemon import qwen, small_context  # noqa: E402,F401  (pytest fixtures)

litellm.telemetry = False

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]


def route(d, kind):
    if kind == "openai":
        return {"model": "openai/m", "api_base": d.base + "/v1", "api_key": "unused"}
    return {"model": "ollama_chat/m", "api_base": d.base}


def ask(text):
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("kind", ["openai", "ollama_chat"])
def test_completion_plain_and_streamed_give_the_same_answer(qwen, kind):  # noqa: F811
    whole = litellm.completion(messages=ask("Is 17 prime?"), timeout=30, **route(qwen, kind))
    text = whole.choices[0].message.content
    assert text and "think>" not in text
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens > 0
    stream = litellm.completion(messages=ask("Is 17 prime?"), stream=True, timeout=30, **route(qwen, kind))
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


@pytest.mark.parametrize("kind", ["openai", "ollama_chat"])
def test_tool_calls_come_back_structured(qwen, kind):  # noqa: F811
    r = litellm.completion(messages=ask("What is the weather in Paris? Use get_weather."), tools=TOOLS,
                           timeout=30, **route(qwen, kind))
    assert r.choices[0].finish_reason == "tool_calls"
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    assert isinstance(litellm.utils.json.loads(calls[0].function.arguments), dict)


def test_responses_plain_streamed_and_with_tools(qwen):  # noqa: F811
    kw = route(qwen, "openai")
    r = litellm.responses(input="Is 17 prime?", instructions="Answer.", timeout=30, **kw)
    assert r.status == "completed"
    text = "".join(part.text for item in r.output if item.type == "message" for part in item.content)
    assert text
    events = list(litellm.responses(input="Is 17 prime?", instructions="Answer.", stream=True, timeout=30, **kw))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    r = litellm.responses(input="What is the weather in Paris? Use get_weather.", timeout=30,
                          tools=[{"type": "function", **TOOLS[0]["function"]}], **kw)
    assert [i.name for i in r.output if i.type == "function_call"] == ["get_weather"]


def test_an_over_long_prompt_is_context_window_exceeded(small_context):  # noqa: F811
    with pytest.raises(litellm.ContextWindowExceededError) as e:
        litellm.completion(messages=ask("word " * 400), timeout=30, num_retries=0,
                           model="openai/fast", api_base=small_context.base + "/v1", api_key="unused")
    assert "maximum context length is 64 tokens" in str(e.value)


@pytest.mark.parametrize("model,path", [("openai/m", "/v1"), ("ollama/m", "")])
def test_embedding(qwen, model, path):  # noqa: F811
    r = litellm.embedding(model=model, api_base=qwen.base + path, api_key="unused",
                          input=["first", "second"], timeout=30)
    vectors = [d["embedding"] for d in r.data]
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in vectors)
    one = litellm.embedding(model=model, api_base=qwen.base + path, api_key="unused", input=["first"], timeout=30)
    assert one.data[0]["embedding"] == pytest.approx(vectors[0], abs=1e-6)
