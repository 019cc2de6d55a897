"""The official `ollama` Python client against a real rkllmd over TCP, with the simulator
underneath: every call it makes must parse, and the parsed fields must mean what they say."""
import json
import os

import httpx
import ollama
import pytest

from daemon import REPO, Daemon, daemon, multimodal_runs, png, qwen, vision  # noqa: F401  (pytest fixtures)

FAST_MODEL = os.path.join(REPO, "vendor", "rkllm-sim", "models", "fast.rkllm")


@pytest.fixture(scope="module")
def failing_daemon(tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "fast.rkllm"
    model.write_text("rkllm-sim 1\nname = err\nanswer_tokens_min = 30\nerror_after_tokens = 5\n")
    d = Daemon(model=str(model))
    yield d
    d.stop()


def client(d):
    return ollama.Client(host=d.base, timeout=30)


def trace(d, fn):
    with open(d.trace) as f:
        return [v for v in map(json.loads, filter(str.strip, f)) if v["fn"] == fn]


def last_run_end(d):
    return trace(d, "run_end")[-1]


def user(text):
    return [{"role": "user", "content": text}]


def test_list_shows_the_model_file(daemon):
    listed = client(daemon).list()
    assert isinstance(listed, ollama.ListResponse)
    assert len(listed.models) == 1
    m = listed.models[0]
    assert m.model == "fast:latest"
    assert m.size == os.path.getsize(FAST_MODEL)
    assert m.modified_at is not None and m.modified_at.utcoffset().total_seconds() == 0
    assert int(m.modified_at.timestamp()) == int(os.path.getmtime(FAST_MODEL))
    assert len(m.digest) >= 12 and int(m.digest, 16) >= 0
    assert m.details.format == "rkllm"
    assert client(daemon).list().models[0].digest == m.digest


def test_ps_shows_the_loaded_model(daemon):
    ps = client(daemon).ps()
    assert isinstance(ps, ollama.ProcessResponse)
    assert [m.model for m in ps.models] == ["fast:latest"]
    m = ps.models[0]
    assert m.name == "fast:latest"
    assert m.size == os.path.getsize(FAST_MODEL)
    assert m.size_vram == 0
    assert m.expires_at.year > 2100
    assert m.context_length > 0
    assert m.details.format == "rkllm"


def test_show_describes_the_model(daemon):
    for name in ("fast", "fast:latest"):
        shown = client(daemon).show(name)
        assert isinstance(shown, ollama.ShowResponse)
        # No preset for fast.rkllm: the runtime's template, tools through the runtime.
        assert shown.capabilities == ["completion", "tools"]
        arch = shown.modelinfo["general.architecture"]
        assert shown.modelinfo[f"{arch}.context_length"] > 0
        assert shown.details.format == "rkllm"
        assert "FROM " in shown.modelfile
        params = dict(line.split(" ", 1) for line in shown.parameters.splitlines())
        assert float(params["temperature"]) >= 0
        assert int(params["num_ctx"]) > 0
        assert shown.modified_at is not None


def test_show_of_a_thinking_template_says_so(tmp_path):
    model = tmp_path / "Qwen3-0.6B_W8A8_RK3588.rkllm"
    model.write_text("rkllm-sim 1\nname = qwen3\nthinking = 1\n")
    d = Daemon(model=str(model))
    try:
        shown = client(d).show("Qwen3-0.6B_W8A8_RK3588")
        # llm-ollama registers a model only with "completion" and sends tools only with "tools".
        assert shown.capabilities == ["completion", "tools", "thinking"]
        assert shown.modelinfo == {"general.architecture": "qwen3", "qwen3.context_length": 4096}
        assert "<|im_start|>assistant\n" in shown.template
        assert shown.details.family == "qwen3"
    finally:
        d.stop()


def test_show_of_an_unknown_model_is_a_404_response_error(daemon):
    with pytest.raises(ollama.ResponseError) as e:
        client(daemon).show("llama3:8b")
    assert e.value.status_code == 404
    assert "llama3:8b" in e.value.error


def test_chat_streaming_and_not_give_the_same_answer_with_real_counts(daemon):
    parts = list(client(daemon).chat(model="fast", messages=user("tell me about chips"), stream=True))
    assert all(isinstance(p, ollama.ChatResponse) for p in parts)
    *pieces, last = parts
    assert pieces and all(not p.done and p.message.role == "assistant" for p in pieces)
    assert last.done and last.done_reason == "stop"
    assert last.message.content == ""
    run_end = last_run_end(daemon)
    assert last.eval_count == run_end["generate_tokens"]
    assert last.prompt_eval_count == run_end["prefill_tokens"]
    assert last.total_duration >= last.eval_duration >= 0
    assert last.load_duration == 0
    streamed = "".join(p.message.content for p in pieces)

    whole = client(daemon).chat(model="fast", messages=user("tell me about chips"))
    assert isinstance(whole, ollama.ChatResponse)
    assert whole.done and whole.done_reason == "stop"
    assert whole.message.role == "assistant"
    assert whole.message.content == streamed
    assert whole.eval_count == last_run_end(daemon)["generate_tokens"]
    assert whole.model == "fast"


def test_chat_options_cap_and_stop(daemon):
    capped = client(daemon).chat(model="fast", messages=user("count"), options={"num_predict": 5})
    assert capped.done_reason == "length"
    assert capped.eval_count == 5
    assert last_run_end(daemon)["generate_tokens"] == 5

    full = client(daemon).chat(model="fast", messages=user("count")).message.content
    stop = full[len(full) // 2:][:4]
    stopped = client(daemon).chat(
        model="fast", messages=user("count"), options=ollama.Options(stop=[stop])
    )
    assert stopped.done_reason == "stop"
    assert stopped.message.content == full[: full.index(stop)]


def test_generate_streaming_and_not(daemon):
    parts = list(
        client(daemon).generate(
            model="fast:latest",
            prompt="Why is the sky blue?",
            stream=True,
            options={"temperature": 0.5, "top_k": 3, "top_p": 0.8},
        )
    )
    assert all(isinstance(p, ollama.GenerateResponse) for p in parts)
    *pieces, last = parts
    assert pieces and not any(p.done for p in pieces)
    assert last.done and last.done_reason == "stop" and last.context == []
    assert last.eval_count == last_run_end(daemon)["generate_tokens"]
    run = trace(daemon, "rkllm_run")[-1]
    assert run["prompt"] == "Why is the sky blue?"
    if run.get("sampling"):  # ABI 1.3 passes sampling per run; 1.2 answers with a warning header
        assert run["sampling"]["top_k"] == 3

    whole = client(daemon).generate(
        model="fast:latest",
        prompt="Why is the sky blue?",
        options={"temperature": 0.5, "top_k": 3, "top_p": 0.8},
    )
    assert isinstance(whole, ollama.GenerateResponse)
    assert whole.response == "".join(p.response for p in pieces)
    assert whole.done and whole.context == []
    assert whole.eval_count == last_run_end(daemon)["generate_tokens"]


def test_generate_without_a_prompt_loads_the_model(daemon):
    runs_before = len(trace(daemon, "rkllm_run"))
    loaded = client(daemon).generate(model="fast")
    assert loaded.done and loaded.done_reason == "load"
    assert loaded.response == ""
    assert len(trace(daemon, "rkllm_run")) == runs_before


def test_bad_requests_are_response_errors_naming_the_field(daemon):
    with pytest.raises(ollama.ResponseError) as e:
        client(daemon).chat(model="fast", messages=user("hi"), options={"temperature": "hot"})
    assert e.value.status_code == 400
    assert "options.temperature" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client(daemon).chat(model="llama3", messages=user("hi"))
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        list(client(daemon).generate(model="llama3", prompt="hi", stream=True))
    assert e.value.status_code == 404


def test_a_runtime_error_mid_stream_is_raised_after_the_text_before_it(failing_daemon):
    received = []
    with pytest.raises(ollama.ResponseError) as e:
        for part in client(failing_daemon).chat(model="fast", messages=user("hi"), stream=True):
            received.append(part)
    assert received and "".join(p.message.content for p in received)
    assert e.value.error
    # The daemon goes on serving.
    assert client(failing_daemon).list().models[0].model == "fast:latest"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def client_via(d, via):
    if via == "tcp":
        return client(d)
    # ollama.Client hands extra keyword arguments to httpx.Client: a Unix-socket transport.
    return ollama.Client(host="http://rkllmd", timeout=30, transport=httpx.HTTPTransport(uds=d.socket))


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_chat_thinking_and_tools_over_tcp_and_the_socket(qwen, via):  # noqa: F811
    c = client_via(qwen, via)
    whole = c.chat(model="m", messages=user("Is 17 prime?"), think=True)
    assert whole.message.thinking and whole.message.content
    assert "think>" not in whole.message.content
    parts = list(c.chat(model="m", messages=user("Is 17 prime?"), think=True, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert "".join(p.message.thinking or "" for p in parts) == whole.message.thinking

    called = c.chat(model="m", messages=user("What is the weather in Paris? Use get_weather."),
                    tools=[WEATHER_TOOL])
    calls = called.message.tool_calls
    assert [t.function.name for t in calls] == ["get_weather"]
    assert isinstance(calls[0].function.arguments, dict)


def test_chat_with_images(vision):  # noqa: F811
    # The client base64-encodes bytes itself.
    reply = client(vision).chat(model="vision-demo", options={"num_predict": 4}, messages=[
        {"role": "user", "content": "What is in this image?", "images": [png()]}])
    assert reply.message.content
    runs = multimodal_runs(vision)
    assert [(r["n_image"], r["embed"]) for r in runs] == [(1, 196 * 1536)]
