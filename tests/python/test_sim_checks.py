"""Keys that make the simulator break one of rkllmd's assumptions, so that `rkllmd selftest`'s
report of each can be tested (vendor/rkllm-sim/README.md, Faults). Each default is checked
elsewhere; here, what the key changes."""
import threading

from test_sim import (LIB, POSTFIX, PREFIX, RKLLM_RUN_ERROR, SYSTEM, TOOLS, model, ntok,
                      session)

__all__ = ["model", "session"]  # fixtures used by the tests below


def test_context_shift_0_fails_a_keep_history_run_past_the_context(session, model):
    s = session(model(context_shift=0), max_context_len=60, max_new_tokens=5)
    sizes = []
    for i in range(8):
        before = s.kv_size()
        r = s.run(f"turn {i} of a long talk", keep_history=1)
        if r.rc != 0:
            assert [e.state for e in r.events] == [RKLLM_RUN_ERROR]
            assert s.kv_size() == before, "the failed run changed the cache"
            break
        sizes.append(s.kv_size())
    else:
        raise AssertionError(f"no run failed: {sizes}")
    assert sizes == sorted(sizes), f"the cache shrank (a shift): {sizes}"


def test_custom_template_0_accepts_the_template_and_keeps_the_model_s(session, model):
    s = session(model(custom_template=0), max_context_len=4096)
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"", b"") == 0
    assert s.run("hi").finish.prefill_tokens == ntok(SYSTEM + PREFIX + "hi" + POSTFIX)


def test_history_kept_0_keeps_only_the_newest_prompt(session, model):
    s = session(model(history_kept=0), max_context_len=4096)
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"", b"") == 0
    s.run("one two three", keep_history=1)
    assert s.kv_size() == ntok("one two three")
    s.run("four five", keep_history=1)
    assert s.kv_size() == ntok("four five")


def test_callback_thread_1_calls_back_from_another_thread_while_rkllm_run_blocks(session, model):
    s = session(model(callback_thread=1))
    r = s.run("hello")
    assert r.rc == 0 and r.finish is not None
    assert threading.get_ident() not in {e.thread for e in r.events}
    assert LIB.rkllm_is_running(s.handle) == 0


def test_tools_removable_0_keeps_the_tools_after_a_call_with_none(session, model):
    s = session(model(tools_removable=0), max_context_len=4096)
    assert LIB.rkllm_set_function_tools(s.handle, b"Sys.", TOOLS.encode(), b"tool_response") == 0
    with_tools = s.run("hi").finish.prefill_tokens
    assert with_tools > ntok(SYSTEM + PREFIX + "hi" + POSTFIX)
    for none in (b"", None):
        assert LIB.rkllm_set_function_tools(s.handle, b"Sys.", none, b"tool_response") == 0
        assert s.kv_size() == 0
        assert s.run("hi").finish.prefill_tokens == with_tools
