"""RKLLM_INFER_GET_LAST_HIDDEN_LAYER runs (rknn-llm's llm_demo.cpp): the hidden states arrive in
a NORMAL callback as result->last_hidden_layer {hidden_states, embd_size, num_tokens}, valid only
during that callback, then FINISH. The simulator's states are deterministic, one vector of the
model's hidden_size per input token, and such a run leaves the KV cache as it was."""
import json
import math

from test_sim import (FAST, POSTFIX, PREFIX, RKLLM_INFER_GET_LAST_HIDDEN_LAYER,
                      RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, SYSTEM, Session, make_infer,
                      make_input, model, ntok, read_trace, session)

__all__ = ["model", "session"]  # fixtures used by the tests below


def hidden_run(s, prompt):
    """One last-hidden-layer run; returns (rc, states copied inside the callback, events)."""
    copied = []

    def on_event(ev):
        r = s.current.contents
        h = r.last_hidden_layer
        if h.hidden_states and h.num_tokens > 0:
            n = h.embd_size * h.num_tokens
            values = list(h.hidden_states[:n])
            copied.append((h.embd_size, h.num_tokens,
                           [values[i * h.embd_size:(i + 1) * h.embd_size]
                            for i in range(h.num_tokens)]))
        return 0

    s.on_event = on_event
    inp, _ = make_input(prompt)
    infer, _ = make_infer()
    infer.mode = RKLLM_INFER_GET_LAST_HIDDEN_LAYER
    r = s.run_input(inp, infer)
    s.on_event = None
    return r, copied


class HiddenSession(Session):
    """A session whose callback also keeps the raw result pointer for the hook to read."""

    def _callback(self, result, userdata, state):
        self.current = result
        return super()._callback(result, userdata, state)


def open_hidden(path, **kw):
    s = HiddenSession(path, **kw)
    assert s.init_rc == 0
    return s


def test_states_come_in_one_normal_callback_then_finish(model):
    s = open_hidden(model(hidden_size=16), max_context_len=512)
    try:
        r, copied = hidden_run(s, "hello world")
        assert r.rc == 0
        assert [e.state for e in r.events] == [RKLLM_RUN_NORMAL, RKLLM_RUN_FINISH]
        assert len(copied) == 1
        embd, ntokens, rows = copied[0]
        # The runtime's template applies: the whole templated input, every token.
        assert embd == 16 and ntokens == ntok(SYSTEM + PREFIX + "hello world" + POSTFIX)
        assert r.finish.prefill_tokens == ntokens and r.finish.generate_tokens == 0
        assert all(math.isfinite(x) and -1.0 <= x < 1.0 for row in rows for x in row)
    finally:
        s.destroy()


def test_the_default_width_is_qwen2_5_1_5b_s(session):
    s = open_hidden(FAST)
    try:
        _, copied = hidden_run(s, "hi")
        assert copied[0][0] == 1536
    finally:
        s.destroy()


def test_same_text_same_states_other_text_other_states(model):
    s = open_hidden(model(hidden_size=8), max_context_len=512)
    try:
        _, a1 = hidden_run(s, "the cat")
        _, a2 = hidden_run(s, "the cat")
        _, b = hidden_run(s, "the dog")
        assert a1[0][2] == a2[0][2]
        assert a1[0][2][-1] != b[0][2][-1]
        # A causal model: the shared prefix has the same states.
        assert a1[0][2][:3] == b[0][2][:3]
    finally:
        s.destroy()


def test_the_kv_cache_is_left_as_it_was(model):
    s = open_hidden(model(hidden_size=4, answer_tokens_min=3, answer_tokens_max=3),
                    max_context_len=512)
    try:
        assert s.run("first turn", keep_history=1).rc == 0
        size = s.kv_size()
        assert size > 0
        r, _ = hidden_run(s, "something else to embed")
        assert r.rc == 0 and s.kv_size() == size
        nxt = s.run("second turn", keep_history=1)
        assert nxt.finish.prefill_tokens == ntok(PREFIX + "second turn" + POSTFIX)
    finally:
        s.destroy()


def test_an_input_over_the_context_fails(model):
    s = open_hidden(model(hidden_size=4), max_context_len=20)
    try:
        r, copied = hidden_run(s, "word " * 40)
        assert r.rc == -1 and copied == []
    finally:
        s.destroy()


def test_the_trace_records_the_mode(tmp_path, monkeypatch, model):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("RKLLM_SIM_TRACE", str(trace))
    s = open_hidden(model(hidden_size=4), max_context_len=512)
    hidden_run(s, "traced")
    s.destroy()
    monkeypatch.delenv("RKLLM_SIM_TRACE")
    runs = [ln for ln in read_trace(trace) if ln["fn"] == "rkllm_run"]
    assert runs[-1]["mode"] == RKLLM_INFER_GET_LAST_HIDDEN_LAYER
    ends = [ln for ln in read_trace(trace) if ln["fn"] == "run_end"]
    assert ends[-1]["generate_tokens"] == 0 and ends[-1]["reason"] == "eos"
    json.dumps(ends)  # plain JSON


def test_hidden_keeps_cache_0_leaves_the_sequence_in_the_cache(model):
    s = open_hidden(model(hidden_size=4, hidden_keeps_cache=0, answer_tokens_min=3,
                          answer_tokens_max=3), max_context_len=512)
    try:
        assert s.run("first turn", keep_history=1).rc == 0
        r, copied = hidden_run(s, "to embed")
        assert r.rc == 0 and s.kv_size() == copied[0][1]
    finally:
        s.destroy()
