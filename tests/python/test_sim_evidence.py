"""Behaviours of the real runtime that the simulator has because upstream evidence shows them
(sources in vendor/rkllm-sim/README.md, "Behaviours taken from the real runtime")."""
from test_sim import (ABI, ABI13, FAST, LIB, LIB_PATH, POSTFIX, PREFIX, SYSTEM, TOOLS,
                      LLMResultCallback, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, model, ntok,
                      only_abi13, session)

__all__ = ["model", "session"]  # fixtures used by the tests below

ASCII_VOCAB = "alpha beta gamma delta epsilon"
RELEASE = {"1.2": b"1.2.3", "1.3": b"1.3.0"}[ABI]


# --------------------------------------------------------------------------------------------
# Version: a banner in the file, the init log line built from a format string
# --------------------------------------------------------------------------------------------
def test_version_is_in_an_sdk_banner_not_a_literal_log_line():
    data = open(LIB_PATH, "rb").read()
    assert b"RKLLM SDK (version: " + RELEASE + b" | target: Linux | build: " in data
    assert b"rkllm-runtime version: " + RELEASE not in data
    assert b"rkllm-runtime version: %s" in data


# --------------------------------------------------------------------------------------------
# Function tools: -1 under an empty template; success replaces the system turn, clears the cache
# --------------------------------------------------------------------------------------------
def test_function_tools_fail_under_an_empty_chat_template(session):
    s = session(FAST)
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"", b"") == 0
    assert LIB.rkllm_set_function_tools(s.handle, b"", TOOLS.encode(), b"tool_response") == -1
    r = s.run("What is the weather in Paris? Use get_weather.")
    assert b"<tool_call>" not in r.text, "the failed call must not have set the tools"
    # Any non-empty part makes the template usable again.
    assert LIB.rkllm_set_chat_template(s.handle, None, b"User: ", None) == 0
    assert LIB.rkllm_set_function_tools(s.handle, b"", TOOLS.encode(), b"tool_response") == 0


def test_function_tools_clear_the_kv_cache(session):
    s = session(FAST, max_context_len=4096)
    s.run("hello there", keep_history=1)
    assert s.kv_size() > ntok(SYSTEM)
    assert LIB.rkllm_set_function_tools(s.handle, b"Sys.", TOOLS.encode(), b"tool_response") == 0
    assert s.kv_size() == 0
    system = "<|im_start|>system\nSys.\n\n# Tools\n\n<tools>\n" + TOOLS + "\n</tools><|im_end|>\n"
    r = s.run("again", keep_history=1)
    assert r.finish.prefill_tokens == ntok(system + PREFIX + "again" + POSTFIX)


def test_tools_defined_in_the_prompt_are_known_while_in_the_cache(session):
    # A caller that renders the conversation itself (empty template) writes the tool
    # definitions into its system turn: the model knows them from there.
    s = session(FAST, max_context_len=4096)
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"", b"") == 0
    system = "<|im_start|>system\n# Tools\n<tools>\n" + TOOLS + "\n</tools><|im_end|>\n"
    joke = s.run(system + PREFIX + "Tell me a joke." + POSTFIX, keep_history=1)
    assert b"<tool_call>" not in joke.text, "the definitions alone do not ask for a call"
    # The next turn continues the cache that holds the definitions.
    r = s.run(POSTFIX + PREFIX + "Weather in Paris? Use get_weather." + POSTFIX, keep_history=1)
    assert r.text == b'<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    # Gone with the cache.
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
    r = s.run(PREFIX + "Weather in Paris? Use get_weather." + POSTFIX, keep_history=1)
    assert b"<tool_call>" not in r.text


# --------------------------------------------------------------------------------------------
# Pause (callback returns 1): no FINISH, cache kept, the next keep_history run resumes
# --------------------------------------------------------------------------------------------
def test_pause_keeps_the_cache_and_the_next_keep_history_run_resumes(session, model):
    path = model(vocabulary=ASCII_VOCAB, answer_tokens_min=30, answer_tokens_max=30)
    whole = session(path, max_context_len=4096).run("hello", keep_history=1)
    assert len(whole.tokens) == 30

    s = session(path, max_context_len=4096)
    s.on_event = lambda e: 1 if len(s.events) == 10 else 0
    paused = s.run("hello", keep_history=1)
    assert paused.rc == 0 and len(paused.events) == 10
    assert not paused.states(RKLLM_RUN_FINISH)
    assert s.kv_size() == ntok(SYSTEM + PREFIX + "hello" + POSTFIX) + 10
    s.on_event = None
    resumed = s.run("go on", keep_history=1)
    assert resumed.finish.prefill_tokens == ntok(PREFIX + "go on" + POSTFIX)
    assert paused.text + resumed.text == whole.text, "the answer goes on where it paused"
    assert len(resumed.tokens) == 20
    # Resumed once: the run after it starts a new answer.
    assert len(s.run("more", keep_history=1).tokens) == 30


def test_pause_keeps_generated_tokens_even_without_keep_history(session, model):
    s = session(model(vocabulary=ASCII_VOCAB, answer_tokens_min=30, answer_tokens_max=30))
    s.on_event = lambda e: 1 if len(s.events) == 5 else 0
    s.run("hello", keep_history=0)
    assert s.kv_size() == ntok(SYSTEM + PREFIX + "hello" + POSTFIX) + 5


def test_a_run_without_keep_history_discards_a_paused_generation(session, model):
    path = model(vocabulary=ASCII_VOCAB, answer_tokens_min=30, answer_tokens_max=30)
    s = session(path, max_context_len=4096)
    s.on_event = lambda e: 1 if len(s.events) == 10 else 0
    s.run("hello", keep_history=1)
    s.on_event = None
    fresh = s.run("hello", keep_history=0)
    assert len(fresh.tokens) == 30
    again = s.run("hello", keep_history=1)
    assert len(again.tokens) == 30, "a paused generation resumes only on the next run"


# --------------------------------------------------------------------------------------------
# BOS: `add_bos = 1` adds one at the start of a fresh cache; default off
# --------------------------------------------------------------------------------------------
def test_add_bos_opens_a_fresh_cache_with_one_token(session, model):
    s = session(model(add_bos=1), max_context_len=4096)
    r1 = s.run("hi", keep_history=1)
    n1 = ntok(SYSTEM + PREFIX + "hi" + POSTFIX) + 1
    assert r1.finish.prefill_tokens == n1
    assert s.kv_size() == n1 + len(r1.tokens)
    r2 = s.run("more", keep_history=1)  # continues the cache: no second BOS
    assert r2.finish.prefill_tokens == ntok(PREFIX + "more" + POSTFIX)
    assert LIB.rkllm_clear_kv_cache(s.handle, 1, None, None) == 0
    assert s.kv_size() == ntok(SYSTEM) + 1, "BOS belongs to the kept system prompt"
    # A template that writes BOS text itself gets it twice: once as text, once from the runtime.
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"<|begin_of_text|>", b"") == 0
    LIB.rkllm_clear_kv_cache(s.handle, 0, None, None)
    assert s.run("x").finish.prefill_tokens == ntok("<|begin_of_text|>x") + 1


def test_no_bos_by_default(session, model):
    s = session(model())
    assert s.run("hi").finish.prefill_tokens == ntok(SYSTEM + PREFIX + "hi" + POSTFIX)


# --------------------------------------------------------------------------------------------
# The RKLLMCallback struct given to rkllm_init is kept by pointer (1.3)
# --------------------------------------------------------------------------------------------
@only_abi13
def test_the_callback_struct_is_read_through_the_pointer_given_to_init(session):
    s = session(FAST)
    seen = []

    def other(result, userdata, state):
        seen.append(state)
        return 0

    s._replacement = LLMResultCallback(other)  # lives as long as the session
    # The caller's struct changes after init, as a reused stack slot would: the runtime sees it.
    s._callbacks.result_callback = s._replacement
    r = s.run("hello")
    assert r.rc == 0
    assert not r.events, "the callback copied at init was called"
    assert RKLLM_RUN_NORMAL in seen and seen[-1] == RKLLM_RUN_FINISH

