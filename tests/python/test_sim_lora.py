"""LoRA adapters, as upstream's rkllm_api_demo (llm_demo.cpp) uses them: rkllm_load_lora loads an
adapter file under a name, and a run selects it by that name in RKLLMInferParam.lora_params. The
simulator's answers depend on the adapter (its file and scale), deterministically; a run naming an
adapter that was never loaded fails. A run that reuses KV-cache entries computed with another
adapter is marked `stale_lora_kv` in the trace: a real model would carry on from keys and values
of other weights, so a caller that switches adapters must clear the cache first."""
import ctypes

from test_sim import (FAST, LIB, RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_RUN_ERROR, Result,
                      RKLLMLoraAdapter, RKLLMLoraParam, RKLLMPromptCacheParam, make_infer,
                      make_input, read_trace, session)

__all__ = ["session"]  # fixtures used by the tests below

QUESTION = "tell me about the river"


def load(s, path, name, scale=1.0):
    adapter = RKLLMLoraAdapter(str(path).encode(), name, scale)
    return LIB.rkllm_load_lora(s.handle, ctypes.byref(adapter))


def run_with(s, prompt, lora, keep_history=0):
    """A run of `prompt` with the adapter named `lora` (None: no lora_params)."""
    inp, keep_in = make_input(prompt)
    infer, keep_infer = make_infer(keep_history)
    param = None
    if lora is not None:
        param = RKLLMLoraParam(lora)
        infer.lora_params = ctypes.pointer(param)
    with s.cond:
        s.events = []
    rc = LIB.rkllm_run(s.handle, ctypes.byref(inp), ctypes.byref(infer), None)
    return Result(rc, s.events)


def adapters(tmp_path):
    a, b = tmp_path / "a.rkllm", tmp_path / "b.rkllm"
    a.write_bytes(b"adapter weights: knowledge")
    b.write_bytes(b"adapter weights: style")
    return a, b


def test_each_adapter_answers_differently_and_always_the_same(session, tmp_path):
    a, b = adapters(tmp_path)
    s = session(FAST, max_context_len=4096)
    assert load(s, a, b"knowledge") == 0
    assert load(s, b, b"style") == 0
    texts = {}
    for name in (None, b"knowledge", b"style"):
        # keep_history 0 on an emptied cache: each answer depends on the prompt and adapter only.
        assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
        r = run_with(s, QUESTION, name)
        assert r.rc == 0 and r.text
        texts[name] = r.text
    assert len(set(texts.values())) == 3, texts
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
    assert run_with(s, QUESTION, b"style").text == texts[b"style"]


def test_the_adapter_file_and_scale_make_the_adapter(session, tmp_path):
    a, b = adapters(tmp_path)
    s = session(FAST, max_context_len=4096)
    answers = []
    for path, scale in ((a, 1.0), (a, 0.5), (b, 1.0)):
        assert load(s, path, b"x", scale) == 0  # the same name again replaces it
        assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
        answers.append(run_with(s, QUESTION, b"x").text)
    assert len(set(answers)) == 3, answers


def test_a_run_naming_an_adapter_never_loaded_fails(session, tmp_path):
    a, _ = adapters(tmp_path)
    s = session(FAST)
    assert load(s, a, b"knowledge") == 0
    r = run_with(s, QUESTION, b"other")
    assert r.rc == -1
    assert [e.state for e in r.events] == [RKLLM_RUN_ERROR]


def test_loading_needs_a_readable_file_and_a_name(session, tmp_path):
    a, _ = adapters(tmp_path)
    s = session(FAST)
    assert load(s, tmp_path / "missing.rkllm", b"x") == -1
    assert load(s, a, None) == -1
    assert load(s, a, b"") == -1


def test_reusing_the_cache_of_another_adapter_is_marked_stale(session, tmp_path, monkeypatch):
    a, b = adapters(tmp_path)
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("RKLLM_SIM_TRACE", str(trace))
    s = session(FAST, max_context_len=4096)
    monkeypatch.delenv("RKLLM_SIM_TRACE")
    assert load(s, a, b"knowledge") == 0
    assert load(s, b, b"style") == 0
    assert run_with(s, QUESTION, b"knowledge", keep_history=1).rc == 0
    # The same adapter continues its own cache; another reuses entries it did not compute.
    assert run_with(s, "and the mountain", b"knowledge", keep_history=1).rc == 0
    assert run_with(s, "and the sea", b"style", keep_history=1).rc == 0
    # After a clear nothing is reused, so nothing is stale.
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
    assert run_with(s, QUESTION, b"style").rc == 0
    runs = [l for l in read_trace(trace) if l["fn"] == "rkllm_run"]
    ends = [l for l in read_trace(trace) if l["fn"] == "run_end"]
    assert [r.get("lora") for r in runs] == ["knowledge", "knowledge", "style", "style"]
    assert [e.get("stale_lora_kv", False) for e in ends] == [False, False, True, False]


def test_a_full_clear_forgets_which_adapter_computed_the_cache(session, tmp_path, monkeypatch):
    # A prompt cache saved by the base model, loaded after an adapter's run and a clear: the
    # emptied cache holds nobody's entries, so the base model's reuse of the file is its own.
    a, _ = adapters(tmp_path)
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("RKLLM_SIM_TRACE", str(trace))
    s = session(FAST, max_context_len=4096)
    monkeypatch.delenv("RKLLM_SIM_TRACE")
    assert load(s, a, b"knowledge") == 0
    saved = tmp_path / "base.bin"
    inp, keep_in = make_input(QUESTION)
    infer, keep_infer = make_infer()
    cache = RKLLMPromptCacheParam(1, str(saved).encode())
    infer.prompt_cache_params = ctypes.pointer(cache)
    assert LIB.rkllm_run(s.handle, ctypes.byref(inp), ctypes.byref(infer), None) == 0
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
    assert run_with(s, "something else", b"knowledge", keep_history=1).rc == 0
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
    assert LIB.rkllm_load_prompt_cache(s.handle, str(saved).encode()) == 0
    assert run_with(s, QUESTION, None, keep_history=1).rc == 0
    ends = [l for l in read_trace(trace) if l["fn"] == "run_end"]
    assert ends[-1]["prefill_tokens"] < ends[0]["prefill_tokens"], "the file was reused"
    assert [e.get("stale_lora_kv", False) for e in ends] == [False, False, False]


def test_a_hidden_layer_run_leaves_the_cache_to_its_adapter(session, tmp_path, monkeypatch):
    a, _ = adapters(tmp_path)
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("RKLLM_SIM_TRACE", str(trace))
    s = session(FAST, max_context_len=4096)
    monkeypatch.delenv("RKLLM_SIM_TRACE")
    assert load(s, a, b"knowledge") == 0
    assert run_with(s, QUESTION, b"knowledge", keep_history=1).rc == 0
    inp, keep_in = make_input("embed this")
    infer, keep_infer = make_infer()
    infer.mode = RKLLM_INFER_GET_LAST_HIDDEN_LAYER
    assert LIB.rkllm_run(s.handle, ctypes.byref(inp), ctypes.byref(infer), None) == 0
    assert run_with(s, "and the mountain", b"knowledge", keep_history=1).rc == 0
    ends = [l for l in read_trace(trace) if l["fn"] == "run_end"]
    assert len(ends) == 3
    assert not any(e.get("stale_lora_kv", False) for e in ends), ends
