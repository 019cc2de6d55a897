"""Prompt cache files (SDK manual 1.3.0, section 3.2.9): RKLLMInferParam.prompt_cache_params
writes the prefilled sequence to a file after the prefill; rkllm_load_prompt_cache restores it
into another handle, whose runs then skip the part of their input that starts with it;
rkllm_release_prompt_cache forgets it. A missing, foreign or damaged file fails the load."""
import ctypes
import os

from test_sim import (FAST, LIB, POSTFIX, PREFIX, SYSTEM, RKLLMPromptCacheParam, Result,
                      make_infer, make_input, model, ntok, session)

__all__ = ["model", "session"]  # fixtures used by the tests below

LONG = "Here is a fixed preamble that every request of this application starts with. " * 4


def run_saving(s, prompt, path):
    """A run that asks for its prefill to be saved to `path` (None: the default path)."""
    inp, keep_in = make_input(prompt)
    infer, keep_infer = make_infer()
    cache = RKLLMPromptCacheParam(1, None if path is None else str(path).encode())
    infer.prompt_cache_params = ctypes.pointer(cache)
    with s.cond:
        s.events = []
    rc = LIB.rkllm_run(s.handle, ctypes.byref(inp), ctypes.byref(infer), None)
    return Result(rc, s.events)


def test_a_saved_prefill_lets_another_handle_skip_it(session, tmp_path):
    path = tmp_path / "preamble.bin"
    first = session(FAST, max_context_len=4096)
    r = run_saving(first, LONG, path)
    whole = ntok(SYSTEM + PREFIX + LONG + POSTFIX)
    assert r.rc == 0 and r.finish.prefill_tokens == whole
    assert path.read_text().startswith("rkllm-sim prompt-cache 1\nmodel fast\ntokens ")

    other = session(FAST, max_context_len=4096)
    assert LIB.rkllm_load_prompt_cache(other.handle, str(path).encode()) == 0
    # The same input: nothing left to prefill. A longer one: only what follows the cached part
    # (the file holds the template's postfix too, so the shared part ends before it).
    assert other.run(LONG).finish.prefill_tokens == 0
    # (LONG ends in a space, which the cached sequence holds as a token of its own and the
    # longer input as the start of " And": the shared part ends before it.)
    longer = other.run(LONG + "And a question?")
    shared = ntok(SYSTEM + PREFIX + LONG[:-1])
    assert longer.finish.prefill_tokens == ntok(
        SYSTEM + PREFIX + LONG + "And a question?" + POSTFIX) - shared



def test_a_released_cache_is_prefilled_again(session, tmp_path):
    path = tmp_path / "p.bin"
    run_saving(session(FAST, max_context_len=4096), LONG, path)
    s = session(FAST, max_context_len=4096)
    assert LIB.rkllm_load_prompt_cache(s.handle, str(path).encode()) == 0
    assert LIB.rkllm_release_prompt_cache(s.handle) == 0
    assert s.run(LONG).finish.prefill_tokens == ntok(SYSTEM + PREFIX + LONG + POSTFIX)


def test_without_a_path_the_file_is_prompt_cache_bin_in_the_working_directory(
        session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_saving(session(FAST), "hi", None).rc == 0
    assert (tmp_path / "prompt_cache.bin").read_text().startswith("rkllm-sim prompt-cache 1\n")


def test_missing_foreign_or_damaged_files_fail_the_load(session, model, tmp_path):
    s = session(FAST)
    assert LIB.rkllm_load_prompt_cache(s.handle, str(tmp_path / "none.bin").encode()) == -1
    other_model = tmp_path / "other.bin"
    run_saving(session(model(name="other")), "hi", other_model)
    assert LIB.rkllm_load_prompt_cache(s.handle, str(other_model).encode()) == -1
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a cache")
    assert LIB.rkllm_load_prompt_cache(s.handle, str(junk).encode()) == -1
    good = tmp_path / "good.bin"
    run_saving(session(FAST), "hi", good)
    cut = tmp_path / "cut.bin"
    cut.write_text(good.read_text()[:-8])
    assert LIB.rkllm_load_prompt_cache(s.handle, str(cut).encode()) == -1
    # A failed load leaves nothing behind: the run prefills everything.
    assert s.run("hi").finish.prefill_tokens == ntok(SYSTEM + PREFIX + "hi" + POSTFIX)
    assert LIB.rkllm_load_prompt_cache(s.handle, str(good).encode()) == 0


def test_an_unwritable_path_is_logged_and_the_run_goes_on(session, tmp_path):
    r = run_saving(session(FAST), "hi", tmp_path / "no-such-dir" / "p.bin")
    assert r.rc == 0 and r.finish is not None
