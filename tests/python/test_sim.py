"""Tests of rkllm-sim, the simulated librkllmrt.so, through a ctypes client.

The client below is written the way Python servers for the real runtime are: ctypes mirrors of
rkllm.h's structs for the ABI under test, rkllm_createDefaultParam + rkllm_init with a CFUNCTYPE
callback, rkllm_run with an RKLLMInput. The expectations come from docs/dev/sim-spec.md and
vendor/rkllm-sim/README.md; token counts are checked against an independent Python version of the
simulator's tokenizer rules.
"""
import ctypes
import json
import os
import struct
import threading
import time
from ctypes import (CFUNCTYPE, POINTER, Structure, Union, byref, c_bool, c_char_p, c_float, c_int,
                    c_int8, c_int32, c_size_t, c_uint8, c_uint32, c_void_p)

import pytest

LIB_PATH = os.environ["RKLLM_SIM_LIB"]  # conftest refuses to run without it
ABI = os.environ["RKLLM_SIM_ABI"]
ABI13 = ABI == "1.3"


def only_abi13(test):
    """Defines `test` only under the 1.3 ABI, whose structs have the fields it needs. Under 1.2
    the test does not exist (rather than being reported as skipped)."""
    return test if ABI13 else None

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(REPO, "vendor", "rkllm-sim", "models")

# --------------------------------------------------------------------------------------------
# rkllm.h mirrors
# --------------------------------------------------------------------------------------------
RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING, RKLLM_RUN_FINISH, RKLLM_RUN_ERROR = 0, 1, 2, 3
RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL = 0, 1, 2, 3
RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER = 0, 1


class RKLLMExtendParam(Structure):
    _fields_ = [("base_domain_id", c_int32), ("embed_flash", c_int8),
                ("enabled_cpus_num", c_int8), ("enabled_cpus_mask", c_uint32),
                ("n_batch", c_uint8), ("use_cross_attn", c_int8), ("reserved", c_uint8 * 104)]


_PARAM_HEAD = [("model_path", c_char_p), ("max_context_len", c_int32),
               ("max_new_tokens", c_int32), ("top_k", c_int32), ("n_keep", c_int32),
               ("top_p", c_float), ("temperature", c_float), ("repeat_penalty", c_float),
               ("frequency_penalty", c_float), ("presence_penalty", c_float),
               ("mirostat", c_int32), ("mirostat_tau", c_float), ("mirostat_eta", c_float),
               ("skip_special_token", c_bool)]

if ABI13:
    class RKLLMParam(Structure):
        _fields_ = _PARAM_HEAD + [("ignore_eos_token", c_bool), ("is_async", c_bool),
                                  ("extend_param", RKLLMExtendParam)]
else:
    class RKLLMParam(Structure):
        _fields_ = _PARAM_HEAD + [("is_async", c_bool), ("img_start", c_char_p),
                                  ("img_end", c_char_p), ("img_content", c_char_p),
                                  ("extend_param", RKLLMExtendParam)]


class RKLLMLoraAdapter(Structure):
    _fields_ = [("lora_adapter_path", c_char_p), ("lora_adapter_name", c_char_p),
                ("scale", c_float)]


class RKLLMEmbedInput(Structure):
    _fields_ = [("embed", POINTER(c_float)), ("n_tokens", c_size_t)]


class RKLLMTokenInput(Structure):
    _fields_ = [("input_ids", POINTER(c_int32)), ("n_tokens", c_size_t)]


if ABI13:
    class RKLLMImageInput(Structure):
        _fields_ = [("image_embed", POINTER(c_float)), ("n_image_tokens", c_size_t),
                    ("n_image", c_size_t), ("image_start", c_char_p), ("image_end", c_char_p),
                    ("image_content", c_char_p), ("image_width", c_size_t),
                    ("image_height", c_size_t)]

    class RKLLMVideoInput(Structure):
        _fields_ = [("video_embed", POINTER(c_float)), ("n_frame_tokens", c_size_t),
                    ("n_frame_per_video", c_size_t), ("n_video", c_size_t),
                    ("video_start", c_char_p), ("video_end", c_char_p),
                    ("video_content", c_char_p), ("frame_width", c_size_t),
                    ("frame_height", c_size_t)]

    class RKLLMMultiModalInput(Structure):
        _fields_ = [("prompt", c_char_p), ("image", RKLLMImageInput),
                    ("video", RKLLMVideoInput)]
else:
    class RKLLMMultiModalInput(Structure):
        _fields_ = [("prompt", c_char_p), ("image_embed", POINTER(c_float)),
                    ("n_image_tokens", c_size_t), ("n_image", c_size_t),
                    ("image_width", c_size_t), ("image_height", c_size_t)]


class RKLLMInputUnion(Union):
    _fields_ = [("prompt_input", c_char_p), ("embed_input", RKLLMEmbedInput),
                ("token_input", RKLLMTokenInput), ("multimodal_input", RKLLMMultiModalInput)]


class RKLLMInput(Structure):
    _anonymous_ = ("u",)
    _fields_ = [("role", c_char_p), ("enable_thinking", c_bool), ("input_type", c_int),
                ("u", RKLLMInputUnion)]


class RKLLMLoraParam(Structure):
    _fields_ = [("lora_adapter_name", c_char_p)]


class RKLLMPromptCacheParam(Structure):
    _fields_ = [("save_prompt_cache", c_int), ("prompt_cache_path", c_char_p)]


class RKLLMCrossAttnParam(Structure):
    _fields_ = [("encoder_k_cache", POINTER(c_float)), ("encoder_v_cache", POINTER(c_float)),
                ("encoder_mask", POINTER(c_float)), ("encoder_pos", POINTER(c_int32)),
                ("num_tokens", c_int)]


if ABI13:
    class RKLLMSamplingParam(Structure):
        _fields_ = [("top_k", c_int32), ("top_p", c_float), ("temperature", c_float),
                    ("repeat_penalty", c_float), ("frequency_penalty", c_float),
                    ("presence_penalty", c_float), ("mirostat", c_int32),
                    ("mirostat_tau", c_float), ("mirostat_eta", c_float)]

    class RKLLMInferParam(Structure):
        _fields_ = [("mode", c_int), ("lora_params", POINTER(RKLLMLoraParam)),
                    ("prompt_cache_params", POINTER(RKLLMPromptCacheParam)),
                    ("sampling_params", POINTER(RKLLMSamplingParam)),
                    ("keep_history", c_int), ("max_new_tokens", c_int32)]
else:
    class RKLLMInferParam(Structure):
        _fields_ = [("mode", c_int), ("lora_params", POINTER(RKLLMLoraParam)),
                    ("prompt_cache_params", POINTER(RKLLMPromptCacheParam)),
                    ("keep_history", c_int)]


class RKLLMResultLastHiddenLayer(Structure):
    _fields_ = [("hidden_states", POINTER(c_float)), ("embd_size", c_int),
                ("num_tokens", c_int)]


class RKLLMResultLogits(Structure):
    _fields_ = [("logits", POINTER(c_float)), ("vocab_size", c_int), ("num_tokens", c_int)]


class RKLLMPerfStat(Structure):
    _fields_ = [("prefill_time_ms", c_float), ("prefill_tokens", c_int),
                ("generate_time_ms", c_float), ("generate_tokens", c_int),
                ("memory_usage_mb", c_float)]


class RKLLMResult(Structure):
    _fields_ = [("text", c_char_p), ("token_id", c_int32),
                ("last_hidden_layer", RKLLMResultLastHiddenLayer),
                ("logits", RKLLMResultLogits), ("perf", RKLLMPerfStat)]


LLMResultCallback = CFUNCTYPE(c_int, POINTER(RKLLMResult), c_void_p, c_int)

if ABI13:
    class RKLLMCallback(Structure):
        _fields_ = [("result_callback", LLMResultCallback), ("result_userdata", c_void_p),
                    ("tokenizer_callback", c_void_p), ("tokenizer_userdata", c_void_p),
                    ("embed_callback", c_void_p), ("embed_userdata", c_void_p)]


def load_library(path):
    lib = ctypes.CDLL(path)
    lib.rkllm_createDefaultParam.restype = RKLLMParam
    lib.rkllm_createDefaultParam.argtypes = []
    init_cb = POINTER(RKLLMCallback) if ABI13 else LLMResultCallback
    lib.rkllm_init.argtypes = [POINTER(c_void_p), POINTER(RKLLMParam), init_cb]
    lib.rkllm_run.argtypes = [c_void_p, POINTER(RKLLMInput), POINTER(RKLLMInferParam), c_void_p]
    lib.rkllm_run_async.argtypes = lib.rkllm_run.argtypes
    for name in ("rkllm_destroy", "rkllm_abort", "rkllm_is_running",
                 "rkllm_release_prompt_cache"):
        getattr(lib, name).argtypes = [c_void_p]
    lib.rkllm_clear_kv_cache.argtypes = [c_void_p, c_int, POINTER(c_int), POINTER(c_int)]
    lib.rkllm_get_kv_cache_size.argtypes = [c_void_p, POINTER(c_int)]
    lib.rkllm_set_chat_template.argtypes = [c_void_p, c_char_p, c_char_p, c_char_p]
    lib.rkllm_set_function_tools.argtypes = [c_void_p, c_char_p, c_char_p, c_char_p]
    lib.rkllm_load_lora.argtypes = [c_void_p, POINTER(RKLLMLoraAdapter)]
    lib.rkllm_load_prompt_cache.argtypes = [c_void_p, c_char_p]
    lib.rkllm_set_cross_attn_params.argtypes = [c_void_p, POINTER(RKLLMCrossAttnParam)]
    for f in (lib.rkllm_init, lib.rkllm_run, lib.rkllm_run_async, lib.rkllm_destroy,
              lib.rkllm_abort, lib.rkllm_is_running, lib.rkllm_clear_kv_cache,
              lib.rkllm_get_kv_cache_size, lib.rkllm_set_chat_template,
              lib.rkllm_set_function_tools, lib.rkllm_load_lora, lib.rkllm_load_prompt_cache,
              lib.rkllm_release_prompt_cache, lib.rkllm_set_cross_attn_params):
        f.restype = c_int
    lib.rkllm_sim_version.restype = c_char_p
    lib.rkllm_sim_version.argtypes = []
    return lib


LIB = load_library(LIB_PATH)

# --------------------------------------------------------------------------------------------
# An independent model of the simulator's tokenizer and default chat template (from the spec)
# --------------------------------------------------------------------------------------------
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
PREFIX = "<|im_start|>user\n"
POSTFIX = "<|im_end|>\n<|im_start|>assistant\n"
TAGS = [t.encode() for t in ("<think>", "</think>", "<tool_call>", "</tool_call>",
                             "<tool_response>", "</tool_response>")]


def _alnum(b):
    return 48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122


def pieces(text):
    """The input pieces of text, per the tokenizer rules of the spec."""
    data = text.encode()
    out, i = [], 0
    while i < len(data):
        n = 0
        if data.startswith(b"<|", i):
            j = i + 2
            while j + 1 < len(data) and j + 2 - i <= 64 and data[j] not in b" \n\t\r":
                if data[j:j + 2] == b"|>":
                    n = j + 2 - i
                    break
                j += 1
        if not n:
            n = next((len(t) for t in TAGS if data.startswith(t, i)), 0)
        if not n:
            c = data[i]
            if _alnum(c) or (c == 0x20 and i + 1 < len(data) and _alnum(data[i + 1])):
                n = 1
                while i + n < len(data) and n < 8 and _alnum(data[i + n]):
                    n += 1
            elif c >= 0xF0:
                n = 4
            elif c >= 0xE0:
                n = 3
            elif c >= 0xC0:
                n = 2
            else:
                n = 1
        out.append(data[i:i + n])
        i += n
    return out


def ntok(text):
    return len(pieces(text))


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------
class Event:
    def __init__(self, state, result, userdata):
        self.state = state
        self.text = result.text  # bytes (copied now: the buffer is only valid during the call)
        self.token_id = result.token_id
        p = result.perf
        self.perf = (p.prefill_time_ms, p.prefill_tokens, p.generate_time_ms, p.generate_tokens,
                     p.memory_usage_mb)
        self.userdata = userdata
        self.thread = threading.get_ident()
        self.t = time.monotonic()
        self.zero_extras = (not result.last_hidden_layer.hidden_states
                            and result.last_hidden_layer.embd_size == 0
                            and not result.logits.logits and result.logits.vocab_size == 0)

    @property
    def prefill_tokens(self):
        return self.perf[1]

    @property
    def generate_tokens(self):
        return self.perf[3]


class Result:
    def __init__(self, rc, events):
        self.rc = rc
        self.events = events

    @property
    def tokens(self):
        return [e for e in self.events if e.state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING)]

    @property
    def text(self):
        return b"".join(e.text for e in self.events if e.state == RKLLM_RUN_NORMAL)

    @property
    def finish(self):
        ends = [e for e in self.events if e.state == RKLLM_RUN_FINISH]
        assert len(ends) == 1, f"expected one FINISH, got {len(ends)}"
        assert self.events[-1] is ends[0], "FINISH must be the last callback"
        return ends[0]

    def states(self, state):
        return [e for e in self.events if e.state == state]


def make_input(prompt=None, *, role=b"user", enable_thinking=False, tokens=None):
    inp = RKLLMInput()
    inp.role = role
    inp.enable_thinking = enable_thinking
    keep = []
    if tokens is not None:
        ids = (c_int32 * len(tokens))(*tokens)
        keep.append(ids)
        inp.input_type = RKLLM_INPUT_TOKEN
        inp.token_input.input_ids = ids
        inp.token_input.n_tokens = len(tokens)
    else:
        inp.input_type = RKLLM_INPUT_PROMPT
        inp.prompt_input = prompt.encode() if isinstance(prompt, str) else prompt
    return inp, keep


def make_infer(keep_history=0, max_new_tokens=0, sampling=None):
    p = RKLLMInferParam()
    p.mode = RKLLM_INFER_GENERATE
    p.keep_history = keep_history
    keep = []
    if ABI13:
        p.max_new_tokens = max_new_tokens
        if sampling is not None:
            s = RKLLMSamplingParam(**sampling)
            keep.append(s)
            p.sampling_params = ctypes.pointer(s)
    else:
        assert not max_new_tokens and sampling is None, "per-run settings are 1.3 only"
    return p, keep


class Session:
    """One handle, its callback and the events the callback received."""

    def __init__(self, model_path, *, result_userdata=None, **param):
        self.events = []
        self.cond = threading.Condition()
        self.on_event = None  # optional: callable(Event) -> callback return value
        self._cb = LLMResultCallback(self._callback)
        p = LIB.rkllm_createDefaultParam()
        p.model_path = os.fsencode(model_path)
        for k, v in param.items():
            setattr(p, k, v)
        self.handle = c_void_p()
        if ABI13:
            self._callbacks = RKLLMCallback()
            self._callbacks.result_callback = self._cb
            self._callbacks.result_userdata = result_userdata
            self.init_rc = LIB.rkllm_init(byref(self.handle), byref(p), byref(self._callbacks))
        else:
            self.init_rc = LIB.rkllm_init(byref(self.handle), byref(p), self._cb)

    def _callback(self, result, userdata, state):
        ev = Event(state, result.contents, userdata)
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()
        return self.on_event(ev) if self.on_event else 0

    def wait(self, pred, timeout):
        """Waits until pred(events) is true; returns whether it became true."""
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.events), timeout)

    def run(self, prompt=None, *, keep_history=0, max_new_tokens=0, sampling=None,
            userdata=None, fn=None, **input_kw):
        inp, k1 = make_input(prompt, **input_kw)
        infer, k2 = make_infer(keep_history, max_new_tokens, sampling)
        with self.cond:
            self.events = []
        rc = (fn or LIB.rkllm_run)(self.handle, byref(inp), byref(infer), userdata)
        return Result(rc, self.events)

    def run_input(self, inp, infer=None, userdata=None):
        infer = infer or make_infer()[0]
        with self.cond:
            self.events = []
        rc = LIB.rkllm_run(self.handle, byref(inp), byref(infer), userdata)
        return Result(rc, self.events)

    def kv_size(self):
        size = c_int(-1)
        assert LIB.rkllm_get_kv_cache_size(self.handle, byref(size)) == 0
        return size.value

    def destroy(self):
        return LIB.rkllm_destroy(self.handle)


# Sessions whose run never returns (hang fault): kept alive for the whole process so that their
# callback objects are never freed under the hung C thread.
_LEAKED = []


@pytest.fixture
def model(tmp_path):
    """Writes a model file with the given keys and returns its path."""
    counter = [0]

    def write(**keys):
        counter[0] += 1
        path = tmp_path / f"m{counter[0]}.rkllm"
        lines = ["rkllm-sim 1"] + [f"{k} = {v}" for k, v in keys.items()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def session():
    """Opens sessions and destroys them after the test."""
    opened = []

    def open_session(model_path, **kw):
        s = Session(model_path, **kw)
        assert s.init_rc == 0, f"rkllm_init failed for {model_path}"
        assert s.handle.value
        opened.append(s)
        return s

    yield open_session
    for s in opened:
        if s not in _LEAKED:
            s.destroy()


FAST = os.path.join(MODELS, "fast.rkllm")
DEMO = os.path.join(MODELS, "demo.rkllm")
DEMO_THINK = os.path.join(MODELS, "demo-qwen3-think.rkllm")
# Demo-like speeds for the timing tests (no load delay, longer answers).
DEMO_SPEEDS = dict(prefill_us_per_token=2950, decode_us_per_token=59880,
                   answer_tokens_min=60, answer_tokens_max=60)
TOKEN_PERIOD = 0.05988
MULTIBYTE_VOCAB = "alpha beta gamma 你好 世界 🚀 🙂 café"


def read_trace(path):
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    assert raw.endswith("\n")
    return [json.loads(line) for line in raw.splitlines()]


# --------------------------------------------------------------------------------------------
# The library itself
# --------------------------------------------------------------------------------------------
def _dynamic_symbols(path):
    """Names of the defined symbols in an ELF file's dynamic symbol table."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF"
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        sh_fmt, sym_fmt = end + "IIQQQQIIQQ", end + "IBBHQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        sh_fmt, sym_fmt = end + "IIIIIIIIII", end + "IIIBBH"
    sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for sec in sections:
        if sec[1] != 11:  # SHT_DYNSYM
            continue
        offset, size, link, entsize = sec[4], sec[5], sec[6], sec[9]
        strtab_off = sections[link][4]
        for i in range(size // entsize):
            sym = struct.unpack_from(sym_fmt, data, offset + i * entsize)
            name_off, shndx = sym[0], sym[3] if is64 else sym[5]
            if shndx == 0 or name_off == 0:  # undefined, or the null symbol
                continue
            end_ = data.index(b"\0", strtab_off + name_off)
            names.add(data[strtab_off + name_off:end_].decode())
    return names


API = {"rkllm_createDefaultParam", "rkllm_init", "rkllm_load_lora", "rkllm_load_prompt_cache",
       "rkllm_release_prompt_cache", "rkllm_destroy", "rkllm_run", "rkllm_run_async",
       "rkllm_abort", "rkllm_is_running", "rkllm_clear_kv_cache", "rkllm_get_kv_cache_size",
       "rkllm_set_chat_template", "rkllm_set_function_tools", "rkllm_set_cross_attn_params"}


def test_exports_only_the_rkllm_api_and_the_version():
    assert _dynamic_symbols(LIB_PATH) == API | {"rkllm_sim_version"}


def test_version_names_the_abi():
    assert LIB.rkllm_sim_version() == f"rkllm-sim 0.1 (abi {ABI})".encode()


def test_default_param():
    p = LIB.rkllm_createDefaultParam()
    assert p.model_path is None
    assert (p.max_context_len, p.max_new_tokens, p.top_k) == (512, -1, 1)
    assert p.top_p == pytest.approx(0.9) and p.temperature == pytest.approx(0.8)
    assert p.repeat_penalty == pytest.approx(1.1)
    assert (p.frequency_penalty, p.presence_penalty, p.mirostat) == (0, 0, 0)
    assert p.mirostat_tau == pytest.approx(5.0) and p.mirostat_eta == pytest.approx(0.1)
    assert p.skip_special_token is True and p.is_async is False
    assert p.extend_param.enabled_cpus_num == 4 and p.extend_param.n_batch == 1
    assert p.extend_param.base_domain_id == 0 and p.extend_param.enabled_cpus_mask == 0
    if ABI13:
        assert p.ignore_eos_token is False


# --------------------------------------------------------------------------------------------
# rkllm_init
# --------------------------------------------------------------------------------------------
def _init(path):
    s = Session(path)
    return s.init_rc, s.handle.value


def test_init_fails_for_missing_file(tmp_path):
    rc, handle = _init(str(tmp_path / "nope.rkllm"))
    assert rc != 0 and handle is None


def test_init_fails_for_a_real_binary_model(tmp_path):
    path = tmp_path / "qwen.rkllm"
    path.write_bytes(b"RKLLM\x00\x01\x02" + bytes(range(256)) * 64)
    assert _init(str(path)) == (-1, None)


@pytest.mark.parametrize("content", [
    "", "\n\n", "rkllm-sim 2\n", "name = x\nrkllm-sim 1\n", "# comment\nrkllm-sim 1\n",
    "rkllm-sim 1\nload_msec = 3\n",            # typo in a key
    "rkllm-sim 1\nload_ms = 300 # ms\n",       # comments are whole lines only
    "rkllm-sim 1\nthinking = 2\n",
    "rkllm-sim 1\ndecode_us_per_token = -1\n",
    "rkllm-sim 1\nanswer_tokens_min = 9\nanswer_tokens_max = 3\n",
    "rkllm-sim 1\nname = a\nname = b\n",
    "rkllm-sim 1\njust words\n",
    "rkllm-sim 1\nanswer =   \n",              # a scripted answer cannot be empty
    "rkllm-sim 1\ngeneral.architecture =\n",   # nor a declared architecture
])
def test_init_fails_for_invalid_model_files(tmp_path, content):
    path = tmp_path / "bad.rkllm"
    path.write_text(content, encoding="utf-8")
    assert _init(str(path)) == (-1, None)


def test_init_fails_with_fail_init(model):
    assert _init(model(fail_init=1)) == (-1, None)


def test_init_accepts_comments_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "ok.rkllm"
    path.write_bytes(b"\n  \r\nrkllm-sim 1\r\n\r\n# c\r\nname = ok\r\n")
    s = Session(str(path))
    assert s.init_rc == 0 and s.handle.value
    assert s.destroy() == 0


def test_init_with_null_handle_pointer_fails():
    p = LIB.rkllm_createDefaultParam()
    p.model_path = FAST.encode()
    cb = LLMResultCallback(lambda r, u, s: 0)
    if ABI13:
        cbs = RKLLMCallback(result_callback=cb)
        assert LIB.rkllm_init(None, byref(p), byref(cbs)) == -1
    else:
        assert LIB.rkllm_init(None, byref(p), cb) == -1


def test_shipped_models_load(session):
    t0 = time.monotonic()
    session(DEMO)
    assert time.monotonic() - t0 >= 0.3  # demo: load_ms = 300
    session(FAST)
    session(DEMO_THINK)


def test_init_accepts_a_declared_architecture(session, model):
    # Real .rkllm files carry GGUF's general.architecture key; rkllmd reads it, the simulator
    # only accepts it.
    assert session(model(**{"general.architecture": "qwen3"})).init_rc == 0


# --------------------------------------------------------------------------------------------
# A normal run
# --------------------------------------------------------------------------------------------
def test_normal_run(session, model):
    s = session(model(vocabulary=MULTIBYTE_VOCAB))
    prompt = "Tell me about the weather."
    r = s.run(prompt)
    assert r.rc == 0
    fin = r.finish
    assert all(e.state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING) for e in r.events[:-1])
    tokens = r.tokens
    assert 24 <= len(tokens) <= 96  # default answer length
    assert fin.generate_tokens == len(tokens)
    assert fin.prefill_tokens == ntok(SYSTEM + PREFIX + prompt + POSTFIX)
    assert fin.text is None and fin.token_id == -1
    assert fin.perf[0] >= 0 and fin.perf[2] >= 0 and fin.perf[4] > 1  # ms, ms, MB (VmHWM)
    waiting = r.states(RKLLM_RUN_WAITING)
    assert waiting, "multi-byte characters must produce WAITING callbacks"
    assert all(e.text == b"" for e in waiting)
    normal = r.states(RKLLM_RUN_NORMAL)
    for e in normal:
        e.text.decode("utf-8")  # every NORMAL text is whole characters
    text = r.text.decode("utf-8")
    assert any(ord(ch) > 0x7F for ch in text)
    assert all(3 <= e.token_id < 32003 for e in tokens)
    assert all(e.zero_extras for e in r.events)
    # A WAITING is always followed by the NORMAL that completes the character.
    for i, e in enumerate(r.events):
        if e.state == RKLLM_RUN_WAITING:
            assert r.events[i + 1].state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING)


def test_default_vocabulary_has_multibyte_words(session):
    s = session(FAST)
    r = s.run("Say something in several languages please.")
    assert r.states(RKLLM_RUN_WAITING)
    assert any(ord(ch) > 0x7F for ch in r.text.decode("utf-8"))


def test_fast_model_answer_lengths(session):
    s = session(FAST)
    lengths = {len(s.run(f"question number {i}").tokens) for i in range(12)}
    assert all(24 <= n <= 96 for n in lengths)
    assert len(lengths) > 3  # the length depends on the prompt


def test_answer_length_bounds_are_honoured(session, model):
    s = session(model(answer_tokens_min=7, answer_tokens_max=7))
    for i in range(5):
        r = s.run(f"prompt {i}")
        assert len(r.tokens) == 7 and r.finish.generate_tokens == 7
        assert r.text.endswith(b".")


def test_userdata_reaches_the_callback(session):
    s = session(FAST, result_userdata=0x5678)
    assert {e.userdata for e in s.run("hi", userdata=0x1234).events} == {0x1234}
    fallback = 0x5678 if ABI13 else None  # 1.3: RKLLMCallback.result_userdata when run's is NULL
    assert {e.userdata for e in s.run("hi").events} == {fallback}


@pytest.mark.parametrize("prompt", [
    "supercalifragilisticexpialidocious 12345678901234567890",
    "<|custom_marker|> and <|" + "x" * 60 + "|> but not <|" + "y" * 61 + "|>",
    "<|not closed, <| spaced |>, <think>inside</think><tool_call></tool_call>",
    "two  spaces,\ttabs\nand\r\nnewlines   ",
    "mixed 你好🚀é ñ Ω",
    "a",
])
def test_prefill_counts_follow_the_tokenizer_rules(session, prompt):
    s = session(FAST, max_context_len=4096)
    r = s.run(prompt)
    assert r.finish.prefill_tokens == ntok(SYSTEM + PREFIX + prompt + POSTFIX)


# --------------------------------------------------------------------------------------------
# Determinism and sampling
# --------------------------------------------------------------------------------------------
def test_same_prompt_same_bytes(session):
    a, b = session(FAST), session(FAST)
    r1, r2, r3 = a.run("Why is the sky blue?"), a.run("Why is the sky blue?"), b.run(
        "Why is the sky blue?")
    assert r1.text == r2.text == r3.text
    assert [e.token_id for e in r1.events] == [e.token_id for e in r3.events]
    assert a.run("Why is the sea blue?").text != r1.text


def test_init_sampling_changes_the_answer(session):
    a = session(FAST)
    b = session(FAST, temperature=0.2)
    c = session(FAST, top_k=40)
    texts = {a.run("Write a poem.").text, b.run("Write a poem.").text, c.run("Write a poem.").text}
    assert len(texts) == 3


# Per-run sampling_params exist in the 1.3 ABI only: the test is defined only there.
@only_abi13
def test_per_run_sampling_changes_the_answer(session):
    s = session(FAST)
    base = s.run("Write a poem.").text
    same = dict(top_k=1, top_p=0.9, temperature=0.8, repeat_penalty=1.1, frequency_penalty=0.0,
                presence_penalty=0.0, mirostat=0, mirostat_tau=5.0, mirostat_eta=0.1)
    assert s.run("Write a poem.", sampling=same).text == base  # same values as init
    hot = dict(same, temperature=1.3)
    r = s.run("Write a poem.", sampling=hot)
    assert r.text != base
    assert s.run("Write a poem.", sampling=hot).text == r.text
    assert s.run("Write a poem.").text == base  # the override lasted one run


# --------------------------------------------------------------------------------------------
# Length limits
# --------------------------------------------------------------------------------------------
def test_init_max_new_tokens_caps_the_answer(session):
    s = session(FAST, max_new_tokens=5)
    r = s.run("Tell me a long story.")
    assert r.rc == 0 and len(r.tokens) == 5 and r.finish.generate_tokens == 5


@only_abi13
def test_per_run_max_new_tokens(session):
    s = session(FAST, max_new_tokens=5)
    assert len(s.run("story", max_new_tokens=9).tokens) == 9  # overrides init
    assert len(s.run("story", max_new_tokens=0).tokens) == 5  # <= 0: init value
    u = session(FAST)
    assert len(u.run("story", max_new_tokens=3).tokens) == 3


@only_abi13
def test_ignore_eos_runs_to_the_cap(session, model):
    path = model(answer_tokens_min=4, answer_tokens_max=4)
    plain = session(path, max_new_tokens=50)
    assert len(plain.run("hi").tokens) == 4
    s = session(path, max_new_tokens=50, ignore_eos_token=True)
    r = s.run("hi")
    assert r.rc == 0 and len(r.tokens) == 50 and r.finish.generate_tokens == 50
    assert r.text.startswith(plain.run("hi").text)
    assert len(s.run("hi", max_new_tokens=120).tokens) == 120


def test_context_overflow_is_an_error(session):
    s = session(FAST, max_context_len=20)
    r = s.run("This prompt is far too long for a context of twenty tokens, by a wide margin.")
    assert r.rc != 0
    assert [e.state for e in r.events] == [RKLLM_RUN_ERROR]
    assert r.events[0].text is None
    assert s.kv_size() == 0


def test_generation_stops_at_the_context_limit(session):
    prompt = "hello"
    full = ntok(SYSTEM + PREFIX + prompt + POSTFIX)
    s = session(FAST, max_context_len=full + 5)
    r = s.run(prompt, keep_history=1)
    assert r.rc == 0 and len(r.tokens) == 5 and r.finish.generate_tokens == 5
    assert s.kv_size() == full + 5


# --------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------
def test_keep_history_1_appends_turns(session):
    s = session(FAST, max_context_len=4096)
    r1 = s.run("first question", keep_history=1)
    n1 = ntok(SYSTEM + PREFIX + "first question" + POSTFIX)
    assert r1.finish.prefill_tokens == n1
    kv1 = s.kv_size()
    assert kv1 == n1 + len(r1.tokens)
    r2 = s.run("second question", keep_history=1)
    n2 = ntok(PREFIX + "second question" + POSTFIX)  # no system prompt: the cache has it
    assert r2.finish.prefill_tokens == n2
    assert s.kv_size() == kv1 + n2 + len(r2.tokens)
    # The history is part of the context: the same question answers differently on turn 3.
    assert s.run("first question", keep_history=1).text != r1.text


def test_keep_history_0_reuses_the_common_prefix(session):
    s = session(FAST)
    p1, p2 = "first question", "first question, and a follow-up"
    full1 = pieces(SYSTEM + PREFIX + p1 + POSTFIX)
    full2 = pieces(SYSTEM + PREFIX + p2 + POSTFIX)
    r1 = s.run(p1)
    assert r1.finish.prefill_tokens == len(full1)
    assert s.kv_size() == len(full1)  # generated tokens are not kept
    r2 = s.run(p2)
    assert r2.finish.prefill_tokens == len(full2) - common_prefix(full1, full2)
    assert r2.finish.prefill_tokens < len(full2)
    r3 = s.run(p2)
    assert r3.finish.prefill_tokens == 0  # all of it is in the cache already
    assert r3.text == r2.text  # keep_history=0: the answer depends on the prompt only


def test_clear_kv_cache(session):
    s = session(FAST)
    s.run("hello there", keep_history=1)
    assert s.kv_size() > ntok(SYSTEM)
    assert LIB.rkllm_clear_kv_cache(s.handle, 1, None, None) == 0
    assert s.kv_size() == ntok(SYSTEM)
    r = s.run("again", keep_history=1)
    assert r.finish.prefill_tokens == ntok(PREFIX + "again" + POSTFIX)
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == 0
    assert s.kv_size() == 0
    r = s.run("again", keep_history=1)
    assert r.finish.prefill_tokens == ntok(SYSTEM + PREFIX + "again" + POSTFIX)
    before = s.kv_size()
    start, end = c_int(2), c_int(7)
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, byref(start), byref(end)) == 0
    assert s.kv_size() == before - 5
    bad_start, bad_end = c_int(7), c_int(2)
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, byref(bad_start), byref(bad_end)) != 0
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, byref(start), None) != 0
    assert s.kv_size() == before - 5


# --------------------------------------------------------------------------------------------
# Chat template, tools, thinking, roles
# --------------------------------------------------------------------------------------------
def test_set_chat_template_changes_the_prefilled_text(session):
    s = session(FAST)
    prompt = "What is 2+2?"
    default = s.run(prompt)
    assert default.finish.prefill_tokens == ntok(SYSTEM + PREFIX + prompt + POSTFIX)
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"User: ", b"\nAssistant: ") == 0
    LIB.rkllm_clear_kv_cache(s.handle, 0, None, None)
    r = s.run(prompt)
    assert r.finish.prefill_tokens == ntok("User: " + prompt + "\nAssistant: ")
    assert r.text != default.text
    # NULL keeps a part: only the system prompt changes here.
    assert LIB.rkllm_set_chat_template(s.handle, b"SYS\n", None, None) == 0
    LIB.rkllm_clear_kv_cache(s.handle, 0, None, None)
    r = s.run(prompt)
    assert r.finish.prefill_tokens == ntok("SYS\n" + "User: " + prompt + "\nAssistant: ")


def test_role_tool_wraps_the_prompt(session):
    s = session(FAST)
    r = s.run('{"temperature": 21}', role=b"tool")
    wrapped = PREFIX + "<tool_response>\n" + '{"temperature": 21}' + "\n</tool_response>" + POSTFIX
    assert r.finish.prefill_tokens == ntok(SYSTEM + wrapped)


TOOLS = json.dumps([
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {
            "name": {"type": "string", "description": "city name"}}}}},
    {"type": "function", "function": {"name": "set_timer", "parameters": {}}},
])


def test_function_tools(session):
    s = session(FAST)
    assert LIB.rkllm_set_function_tools(s.handle, b"You can use tools.", TOOLS.encode(),
                                        b"tool_response") == 0
    prompt = "What is the weather in Paris? Use get_weather."
    r = s.run(prompt)
    assert r.rc == 0
    assert r.text == b'<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    assert r.finish.generate_tokens == len(r.tokens)
    system = ("<|im_start|>system\nYou can use tools.\n\n# Tools\n\n<tools>\n" + TOOLS
              + "\n</tools><|im_end|>\n")
    assert r.finish.prefill_tokens == ntok(system + PREFIX + prompt + POSTFIX)
    assert b"set_timer" in s.run("please set_timer for 5 minutes").text
    plain = s.run("Tell me a joke.")
    assert b"<tool_call>" not in plain.text and len(plain.tokens) >= 24
    # A tool result that names the tool is answered in prose, not with another call.
    assert b"<tool_call>" not in s.run("get_weather: 21 C", role=b"tool").text


def test_a_scripted_answer_is_the_answer_to_every_prompt(session, model):
    answer = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}} 🙂'
    s = session(model(answer=answer, thinking=1))
    for prompt in ("What is the weather in Paris?", "Anything else?"):
        r = s.run(prompt)
        assert r.rc == 0
        assert r.text.decode("utf-8") == answer
        assert r.finish.generate_tokens == len(r.tokens) == ntok(answer) + 1  # emoji: 2 pieces
    # A thinking model thinks first; a call for a named tool still wins.
    thought = s.run("Is 17 prime?", enable_thinking=True).text.decode("utf-8")
    assert thought.startswith("<think>\n") and thought.endswith("</think>\n\n" + answer)
    assert LIB.rkllm_set_function_tools(s.handle, b"", TOOLS.encode(), b"tool_response") == 0
    assert s.run("Use get_weather.").text.startswith(b"<tool_call>")


def test_thinking(session, model):
    s = session(model(thinking=1))
    r = s.run("Is 17 prime?", enable_thinking=True)
    assert r.text.startswith(b"<think>\n")
    head, sep, answer = r.text.partition(b"</think>\n\n")
    assert sep and len(head) > len(b"<think>\n") and answer
    assert b"<think>" not in s.run("Is 17 prime?", enable_thinking=False).text
    # A model without thinking ignores the flag.
    plain = session(FAST)
    assert b"<think>" not in plain.run("Is 17 prime?", enable_thinking=True).text


def test_thinking_with_a_custom_template_follows_the_prompt(session, model):
    # The caller renders the prompt (as rkllmd does, with empty template strings): the model
    # thinks unless the prompt ends with the empty think block; enable_thinking is ignored.
    s = session(model(thinking=1))
    assert LIB.rkllm_set_chat_template(s.handle, b"", b"", b"") == 0
    rendered = "<|im_start|>user\nIs 17 prime?<|im_end|>\n<|im_start|>assistant\n"
    r = s.run(rendered, enable_thinking=False)
    head, sep, answer = r.text.partition(b"</think>\n\n")
    assert r.text.startswith(b"<think>\n") and sep and answer
    off = s.run(rendered + "<think>\n\n</think>\n\n", enable_thinking=True)
    assert b"<think>" not in off.text and off.text
    # The block must end the turn: the template's postfix counts.
    assert LIB.rkllm_set_chat_template(s.handle, None, None, b"\n") == 0
    assert s.run(rendered + "<think>\n\n</think>\n\n").text.startswith(b"<think>\n")
    # Token input has no text to read: no thinking.
    assert b"<think>" not in s.run(tokens=[100, 200, 300]).text
    plain = session(FAST)
    assert LIB.rkllm_set_chat_template(plain.handle, b"", b"", b"") == 0
    assert b"<think>" not in plain.run(rendered).text


def _shipped_model_without_delays(model, path):
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("#")]
    keys = dict(ln.split(" = ", 1) for ln in lines[1:])
    raw = dict(keys)
    for k in ("load_ms", "prefill_us_per_token", "decode_us_per_token"):
        keys[k] = 0
    return raw, model(**keys)


def test_demo_model_answers_without_thinking(session, model):
    # Qwen2.5, whose speeds demo.rkllm has, never thinks (issue 19).
    raw, m = _shipped_model_without_delays(model, DEMO)
    assert raw["general.architecture"] == "qwen2" and raw["decode_us_per_token"] == "59880"
    r = session(m).run("你好! Tell me something 🙂", enable_thinking=True)
    assert b"<think>" not in r.text and r.text and r.states(RKLLM_RUN_WAITING)


def test_thinking_demo_model_thinks_and_answers_with_multibyte_text(session, model):
    raw, m = _shipped_model_without_delays(model, DEMO_THINK)
    assert raw["thinking"] == "1" and raw["general.architecture"] == "qwen3"
    r = session(m).run("你好! Tell me something 🙂", enable_thinking=True)
    assert r.text.startswith(b"<think>") and r.states(RKLLM_RUN_WAITING)


# --------------------------------------------------------------------------------------------
# Other inputs
# --------------------------------------------------------------------------------------------
def test_token_input(session):
    s = session(FAST)
    r = s.run(tokens=[100, 200, 300, 400])
    assert r.rc == 0 and r.finish.prefill_tokens == 4 and s.kv_size() == 4
    r2 = s.run(tokens=[100, 200, 300, 400, 500])
    assert r2.finish.prefill_tokens == 1  # prefix reuse works on token input too


def test_embed_and_multimodal_inputs(session):
    s = session(FAST)
    embed = (c_float * (6 * 16))()
    inp = RKLLMInput(role=b"user", input_type=RKLLM_INPUT_EMBED)
    inp.embed_input.embed = embed
    inp.embed_input.n_tokens = 6
    r = s.run_input(inp)
    assert r.rc == 0 and r.finish.prefill_tokens == 6 and r.tokens
    assert s.run_input(inp).finish.prefill_tokens == 6  # embeddings are never reused

    # One image of 16 positions, each FAST's hidden_size (1536) floats wide, at the "<image>"
    # placeholder (tags unset: nothing around it).
    image = (c_float * (16 * 1536))()
    mm = multimodal_input(b"<image>What is in the picture?", image, n_image=1, n_image_tokens=16)
    LIB.rkllm_clear_kv_cache(s.handle, 0, None, None)
    r = s.run_input(mm)
    prefilled = ntok(SYSTEM) + ntok(PREFIX) + 16 + ntok("What is in the picture?" + POSTFIX)
    assert r.rc == 0 and r.finish.prefill_tokens == prefilled and r.tokens


def multimodal_input(prompt, embed, n_image, n_image_tokens):
    mm = RKLLMInput(role=b"user", input_type=RKLLM_INPUT_MULTIMODAL)
    mm.multimodal_input.prompt = prompt
    if ABI13:
        mm.multimodal_input.image.image_embed = embed
        mm.multimodal_input.image.n_image_tokens = n_image_tokens
        mm.multimodal_input.image.n_image = n_image
    else:
        mm.multimodal_input.image_embed = embed
        mm.multimodal_input.n_image_tokens = n_image_tokens
        mm.multimodal_input.n_image = n_image
    return mm


def test_multimodal_input_needs_a_placeholder_per_image_and_the_models_token_count(session, model):
    s = session(model(hidden_size=8, image_tokens=4))
    embed = (c_float * (2 * 4 * 8))()
    assert s.run_input(multimodal_input(b"<image>Two?", embed, 2, 4)).rc == -1
    assert s.run_input(multimodal_input(b"<image><image>Two?", embed, 2, 3)).rc == -1
    r = s.run_input(multimodal_input(b"<image><image>Two?", embed, 2, 4))
    assert r.rc == 0 and r.tokens


def test_multimodal_answers_follow_the_embeddings(session, model):
    s = session(model(hidden_size=8, image_tokens=4))
    a = (c_float * 32)(*[0.25] * 32)
    b = (c_float * 32)(*[0.5] * 32)
    first = s.run_input(multimodal_input(b"<image>What?", a, 1, 4)).text
    assert first == s.run_input(multimodal_input(b"<image>What?", a, 1, 4)).text
    assert first != s.run_input(multimodal_input(b"<image>What?", b, 1, 4)).text


def test_unsupported_infer_mode_is_rejected(session):
    s = session(FAST)
    inp, _ = make_input("hi")
    infer, _ = make_infer()
    infer.mode = 2  # RKLLM_INFER_GET_LOGITS (last-hidden-layer runs: test_sim_hidden_layer.py)
    r = s.run_input(inp, infer)
    assert r.rc == -1 and r.events == []


def test_auxiliary_functions(session, tmp_path):
    s = session(FAST)
    lora_file = tmp_path / "adapter.rkllm"
    lora_file.write_bytes(b"lora")
    ok = RKLLMLoraAdapter(str(lora_file).encode(), b"a", 1.0)
    missing = RKLLMLoraAdapter(str(tmp_path / "none").encode(), b"b", 1.0)
    assert LIB.rkllm_load_lora(s.handle, byref(ok)) == 0
    assert LIB.rkllm_load_lora(s.handle, byref(missing)) == -1
    # Prompt cache files have their own tests (test_sim_prompt_cache.py): a missing one fails.
    assert LIB.rkllm_load_prompt_cache(s.handle, str(tmp_path / "none.bin").encode()) == -1
    assert LIB.rkllm_release_prompt_cache(s.handle) == 0
    cross = RKLLMCrossAttnParam(num_tokens=3)
    assert LIB.rkllm_set_cross_attn_params(s.handle, byref(cross)) == 0


# --------------------------------------------------------------------------------------------
# Callbacks controlling the run
# --------------------------------------------------------------------------------------------
def test_callback_returning_1_pauses(session):
    s = session(FAST)
    s.on_event = lambda e: 1 if len(s.events) == 4 else 0
    r = s.run("hello", keep_history=1)
    assert r.rc == 0
    assert len(r.events) == 4 and not r.states(RKLLM_RUN_FINISH)
    assert s.kv_size() == ntok(SYSTEM + PREFIX + "hello" + POSTFIX) + 4


def test_is_running(session):
    s = session(FAST)
    assert LIB.rkllm_is_running(s.handle) == 0
    seen = []
    s.on_event = lambda e: seen.append(LIB.rkllm_is_running(s.handle)) or 0
    r = s.run("hello")
    assert set(seen[:-1]) == {1}
    assert seen[-1] == 0  # idle by the time FINISH is delivered
    assert r.finish and LIB.rkllm_is_running(s.handle) == 0


# --------------------------------------------------------------------------------------------
# Abort, faults and threads (demo-like speeds)
# --------------------------------------------------------------------------------------------
def _start(s, prompt="Tell me a story about a river.", **kw):
    out = {}

    def target():
        out["result"] = s.run(prompt, **kw)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def _tokens(events):
    return sum(e.state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING) for e in events)


def _finished(events):
    return any(e.state in (RKLLM_RUN_FINISH, RKLLM_RUN_ERROR) for e in events)


def test_first_token_time_matches_the_demo_model(session, model):
    # 2950 us/token: a 128-token prefill takes ~378 ms, as Qwen2.5-1.5B on RK3588.
    s = session(model(**DEMO_SPEEDS))
    prompt = " ".join(["word"] * 128)
    prompt = prompt[:len(prompt) - 5 * (ntok(SYSTEM + PREFIX + prompt + POSTFIX) - 128)]
    assert ntok(SYSTEM + PREFIX + prompt + POSTFIX) == 128
    t0 = time.monotonic()
    t, out = _start(s, prompt)
    assert s.wait(lambda ev: _tokens(ev) >= 3, 3)
    first = next(e for e in s.events if e.state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING))
    # The lower bounds are the simulator's sleeps; the upper ones only catch a run that ignores
    # them (generous: this machine is shared and a loaded core delays any wake-up).
    assert 0.37 <= first.t - t0 < 1.2
    tok = [e.t for e in s.events if e.state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING)]
    assert 0.05 < tok[2] - tok[1] < 0.3  # one decode period (59.88 ms)
    LIB.rkllm_abort(s.handle)
    t.join(2)
    assert out["result"].finish.prefill_tokens == 128


def test_abort_ends_the_run_within_one_token_period(session, model):
    s = session(model(**DEMO_SPEEDS))
    t, out = _start(s)
    assert s.wait(lambda ev: _tokens(ev) >= 3, 3)
    t_abort = time.monotonic()
    assert LIB.rkllm_abort(s.handle) == 0
    assert s.wait(_finished, 2)
    t.join(2)
    r = out["result"]
    assert r.rc == 0
    fin = r.finish
    assert fin.t - t_abort < 0.5  # the token count below is the exact check
    assert sum(1 for e in r.tokens if e.t > t_abort) <= 1
    assert fin.generate_tokens == len(r.tokens) < 60
    assert LIB.rkllm_is_running(s.handle) == 0


def test_abort_during_prefill(session, model):
    s = session(model(prefill_us_per_token=20000, decode_us_per_token=59880))
    prompt = "a long prompt " * 20
    full = ntok(SYSTEM + PREFIX + prompt + POSTFIX)  # ~2.5 s of prefill
    t, out = _start(s, prompt)
    time.sleep(0.3)
    t_abort = time.monotonic()
    LIB.rkllm_abort(s.handle)
    assert s.wait(_finished, 2)
    t.join(2)
    fin = out["result"].finish
    assert fin.t - t_abort < 0.5  # prefill sleeps in slices of <= 5 ms; ~2.2 s were left
    assert not out["result"].tokens and fin.generate_tokens == 0
    assert 5 <= fin.prefill_tokens < full


def test_abort_delay(session, model):
    s = session(model(abort_delay_ms=300, **DEMO_SPEEDS))
    t, out = _start(s)
    assert s.wait(lambda ev: _tokens(ev) >= 2, 3)
    t_abort = time.monotonic()
    LIB.rkllm_abort(s.handle)
    assert s.wait(_finished, 2)
    t.join(2)
    fin = out["result"].finish
    assert 0.3 <= fin.t - t_abort < 1.0
    assert sum(1 for e in out["result"].tokens if e.t > t_abort) >= 4  # it kept generating


def test_prefill_abort_lag(session, model):
    # rknn-llm#400: an abort during the prefill takes effect ~1.27 s late.
    s = session(model(prefill_abort_lag_ms=800, prefill_us_per_token=20000,
                      decode_us_per_token=59880))
    t, out = _start(s, "a long prompt " * 20)  # ~2.5 s of prefill
    time.sleep(0.1)
    t_abort = time.monotonic()
    LIB.rkllm_abort(s.handle)
    assert not s.wait(_finished, 0.6), "the abort took effect before its lag"
    assert s.wait(_finished, 1)
    t.join(2)
    fin = out["result"].finish
    assert 0.8 <= fin.t - t_abort < 1.6  # the prefill alone had ~2.4 s left
    assert not out["result"].tokens


def test_the_demo_model_aborts_its_prefill_as_late_as_a_board(session):
    # rknn-llm#400: abort ~100 ms into the run, effective at ~1.37 s.
    s = session(DEMO, max_context_len=4096)
    t0 = time.monotonic()
    t, out = _start(s, "word " * 900)  # ~2.7 s of prefill at 2950 us per token
    time.sleep(0.1)
    LIB.rkllm_abort(s.handle)
    assert s.wait(_finished, 3)
    t.join(2)
    r = out["result"]
    assert 1.3 <= r.finish.t - t0 < 1.5
    assert not r.tokens and r.rc == 0


def test_prefill_abort_lag_ends_at_the_prefill_end_when_that_comes_first(session, model):
    s = session(model(prefill_abort_lag_ms=5000, prefill_us_per_token=20000,
                      decode_us_per_token=59880))
    prompt = "a long prompt " * 20
    t0 = time.monotonic()
    t, out = _start(s, prompt)
    time.sleep(0.1)
    LIB.rkllm_abort(s.handle)
    assert s.wait(_finished, 4)
    t.join(2)
    r = out["result"]
    prefill_s = ntok(SYSTEM + PREFIX + prompt + POSTFIX) * 0.02
    assert prefill_s <= r.finish.t - t0 < prefill_s + 0.1
    assert not r.tokens and r.rc == 0


def test_a_decode_abort_has_no_prefill_lag(session, model):
    s = session(model(prefill_abort_lag_ms=5000, **DEMO_SPEEDS))
    t, out = _start(s)
    assert s.wait(lambda ev: _tokens(ev) >= 2, 3)
    t_abort = time.monotonic()
    LIB.rkllm_abort(s.handle)
    assert s.wait(_finished, 1)
    t.join(2)
    assert out["result"].finish.t - t_abort < 1.0  # not the 5 s lag


def test_abort_finish_0_ends_an_aborted_run_without_a_final_callback(session, model):
    s = session(model(abort_finish=0, **DEMO_SPEEDS), max_context_len=4096)
    t, out = _start(s, keep_history=1)
    assert s.wait(lambda ev: _tokens(ev) >= 3, 3)
    LIB.rkllm_abort(s.handle)
    t.join(2)
    assert not t.is_alive()
    r = out["result"]
    assert r.rc == 0
    assert all(e.state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING) for e in r.events)
    assert LIB.rkllm_is_running(s.handle) == 0
    assert s.kv_size() > len(r.tokens), "the cache keeps what was generated"


@pytest.mark.parametrize("n_keep, kept", [(0, 0), (5, 5), (-1, "system")])
def test_keep_history_past_the_context_shifts_it(session, n_keep, kept):
    s = session(FAST, max_context_len=200, max_new_tokens=20, n_keep=n_keep)
    sizes = []
    for i in range(12):
        before = s.kv_size()
        r = s.run(f"turn {i} of a conversation that goes on and on", keep_history=1)
        assert r.rc == 0 and r.finish is not None, f"turn {i}"
        sizes.append((before, r.finish.prefill_tokens, len(r.tokens), s.kv_size()))
    shifted = [x for x in sizes if x[0] + x[1] + x[2] != x[3]]
    assert shifted, f"no context shift in {sizes}"
    assert all(after <= 200 for *_, after in sizes)
    # A span after the first n_keep tokens went: the kept head is still the same.
    want = ntok(SYSTEM) if kept == "system" else kept
    assert s.kv_size() >= want


def test_a_single_input_larger_than_the_context_still_fails_with_history(session):
    s = session(FAST, max_context_len=60, max_new_tokens=5)
    assert s.run("hi", keep_history=1).rc == 0
    r = s.run("word " * 80, keep_history=1)
    assert r.rc != 0 and [e.state for e in r.events] == [RKLLM_RUN_ERROR]


def test_abort_when_idle_has_no_effect(session, model):
    s = session(model(answer_tokens_min=30, answer_tokens_max=30))
    assert LIB.rkllm_abort(s.handle) == 0
    r = s.run("hello")
    assert r.rc == 0 and len(r.tokens) == 30


def test_abort_from_the_callback(session):
    s = session(FAST)
    s.on_event = lambda e: LIB.rkllm_abort(s.handle) if len(s.events) == 3 else 0
    r = s.run("hello")
    assert r.rc == 0 and len(r.tokens) == 3 and r.finish.generate_tokens == 3


def test_error_after_tokens(session, model):
    s = session(model(error_after_tokens=5))
    r = s.run("hello", keep_history=1)
    assert r.rc == -1
    assert len(r.events) == 6 and _tokens(r.events) == 5
    assert r.events[-1].state == RKLLM_RUN_ERROR and r.events[-1].text is None
    assert not r.states(RKLLM_RUN_FINISH)
    assert s.kv_size() == 0  # the failed run left the cache as it was
    assert LIB.rkllm_is_running(s.handle) == 0


def test_hang_after_tokens(session, model):
    s = session(model(hang_after_tokens=3))
    _LEAKED.append(s)  # never destroyed: its run never returns
    t, out = _start(s)
    assert s.wait(lambda ev: _tokens(ev) >= 3, 2)
    assert not s.wait(_finished, 1.0)
    assert LIB.rkllm_is_running(s.handle) == 1
    assert LIB.rkllm_abort(s.handle) == 0
    assert not s.wait(lambda ev: _finished(ev) or _tokens(ev) > 3, 0.5)
    assert t.is_alive() and "result" not in out
    assert LIB.rkllm_is_running(s.handle) == 1


def test_second_run_on_a_busy_handle_fails(session, model):
    s = session(model(**DEMO_SPEEDS))
    t, out = _start(s)
    assert s.wait(lambda ev: _tokens(ev) >= 1, 3)
    inp, _ = make_input("other")
    infer, _ = make_infer()
    assert LIB.rkllm_run(s.handle, byref(inp), byref(infer), None) == -1
    assert LIB.rkllm_run_async(s.handle, byref(inp), byref(infer), None) == -1
    assert LIB.rkllm_clear_kv_cache(s.handle, 0, None, None) == -1
    LIB.rkllm_abort(s.handle)
    t.join(2)
    assert out["result"].rc == 0 and out["result"].finish


def test_destroy_during_a_run_aborts_it(model):
    s = Session(model(**DEMO_SPEEDS))
    assert s.init_rc == 0
    t, out = _start(s)
    assert s.wait(lambda ev: _tokens(ev) >= 2, 3)
    t0 = time.monotonic()
    assert s.destroy() == 0
    assert time.monotonic() - t0 < TOKEN_PERIOD + 0.05
    t.join(2)
    assert out["result"].rc == 0 and out["result"].finish
    assert LIB.rkllm_is_running(s.handle) == -1  # gone
    assert s.destroy() == -1


def test_run_async(session, model):
    s = session(model(**DEMO_SPEEDS), result_userdata=0x77)
    me = threading.get_ident()
    t0 = time.monotonic()
    r = s.run("hello", fn=LIB.rkllm_run_async)
    assert r.rc == 0
    assert not _finished(s.events)  # returned before the run ended
    assert LIB.rkllm_is_running(s.handle) == 1
    assert s.wait(lambda ev: _tokens(ev) >= 2, 3)
    LIB.rkllm_abort(s.handle)
    assert s.wait(_finished, 2)
    assert me not in {e.thread for e in s.events}
    assert LIB.rkllm_is_running(s.handle) == 0
    fin = Result(0, list(s.events)).finish
    assert fin.generate_tokens == _tokens(s.events)
    if ABI13:
        assert {e.userdata for e in s.events} == {0x77}

    # Back to back on the fast model, the next run started from the FINISH callback.
    f = session(FAST)
    runs = []

    def chain(e):
        if e.state == RKLLM_RUN_FINISH and len(runs) < 3:
            runs.append(f.run("again", fn=LIB.rkllm_run_async).rc)
        return 0

    f.on_event = chain
    assert f.run("first", fn=LIB.rkllm_run_async).rc == 0
    assert f.wait(lambda ev: sum(e.state == RKLLM_RUN_FINISH for e in ev) >= 1 and len(runs) == 3,
                  5)
    assert runs == [0, 0, 0]


# --------------------------------------------------------------------------------------------
# NULL and stale handles
# --------------------------------------------------------------------------------------------
def _all_calls(h):
    inp, _ = make_input("hi")
    infer, _ = make_infer()
    size = c_int()
    start, end = c_int(0), c_int(1)
    lora = RKLLMLoraAdapter(b"/nonexistent", b"x", 1.0)
    cross = RKLLMCrossAttnParam()
    return {
        "run": LIB.rkllm_run(h, byref(inp), byref(infer), None),
        "run_async": LIB.rkllm_run_async(h, byref(inp), byref(infer), None),
        "abort": LIB.rkllm_abort(h),
        "is_running": LIB.rkllm_is_running(h),
        "clear_kv_cache": LIB.rkllm_clear_kv_cache(h, 1, None, None),
        "clear_range": LIB.rkllm_clear_kv_cache(h, 0, byref(start), byref(end)),
        "get_kv_cache_size": LIB.rkllm_get_kv_cache_size(h, byref(size)),
        "set_chat_template": LIB.rkllm_set_chat_template(h, b"", b"", b""),
        "set_function_tools": LIB.rkllm_set_function_tools(h, b"", b"[]", b"tool_response"),
        "load_lora": LIB.rkllm_load_lora(h, byref(lora)),
        "load_prompt_cache": LIB.rkllm_load_prompt_cache(h, b"/tmp/x"),
        "release_prompt_cache": LIB.rkllm_release_prompt_cache(h),
        "set_cross_attn_params": LIB.rkllm_set_cross_attn_params(h, byref(cross)),
        "destroy": LIB.rkllm_destroy(h),
    }


def test_null_handle_returns_minus_one():
    results = _all_calls(None)
    assert results == {k: -1 for k in results}


def test_destroyed_handle_returns_minus_one():
    s = Session(FAST)
    assert s.init_rc == 0 and s.destroy() == 0
    results = _all_calls(s.handle)
    assert results == {k: -1 for k in results}


# --------------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------------
def test_trace(tmp_path, monkeypatch, model):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("RKLLM_SIM_TRACE", str(trace))
    path = model(answer_tokens_min=10, answer_tokens_max=10)
    s = Session(path, max_context_len=1000, max_new_tokens=300, top_k=7, temperature=0.5)
    assert s.init_rc == 0
    LIB.rkllm_set_chat_template(s.handle, b"S", None, b"\nA:")
    LIB.rkllm_set_function_tools(s.handle, b"sys", b'[{"name": "f"}]', b"tool_response")
    prompt = 'quote " backslash \\ newline \n tab \t bell \x07 你好 🚀'
    r1 = s.run(prompt, keep_history=1, enable_thinking=True)
    kw = dict(max_new_tokens=4, sampling=dict(top_k=3, top_p=0.5, temperature=1.5,
                                              repeat_penalty=1.0, frequency_penalty=0.25,
                                              presence_penalty=0.5, mirostat=0,
                                              mirostat_tau=5.0, mirostat_eta=0.1)) if ABI13 else {}
    r2 = s.run("second", role=b"tool", **kw)
    s.kv_size()
    LIB.rkllm_clear_kv_cache(s.handle, 1, None, None)
    LIB.rkllm_is_running(s.handle)
    LIB.rkllm_abort(s.handle)
    s.destroy()
    monkeypatch.delenv("RKLLM_SIM_TRACE")

    lines = read_trace(trace)
    fns = [ln["fn"] for ln in lines]
    assert fns == ["rkllm_createDefaultParam", "rkllm_init", "rkllm_set_chat_template",
                   "rkllm_set_function_tools", "rkllm_run", "run_end", "rkllm_run", "run_end",
                   "rkllm_get_kv_cache_size", "rkllm_clear_kv_cache", "rkllm_is_running",
                   "rkllm_abort", "rkllm_destroy"]
    times = [ln["t_us"] for ln in lines]
    assert all(isinstance(t, int) for t in times) and times == sorted(times)
    init = lines[1]
    handle_id = init["handle"]
    assert all(ln["handle"] == handle_id for ln in lines[1:])
    assert init["model_path"] == path and init["abi"] == ABI
    assert (init["max_context_len"], init["max_new_tokens"]) == (1000, 300)
    assert init["sampling"]["top_k"] == 7 and init["sampling"]["temperature"] == 0.5
    assert init["sampling"]["top_p"] == 0.9 and init["is_async"] is False
    assert ("ignore_eos_token" in init) == ABI13
    tmpl = lines[2]
    assert (tmpl["system_prompt"], tmpl["prompt_prefix"], tmpl["prompt_postfix"]) == (
        "S", None, "\nA:")
    tools = lines[3]
    assert (tools["system_prompt"], tools["tools"], tools["tool_response_str"]) == (
        "sys", '[{"name": "f"}]', "tool_response")
    run1, end1, run2, end2 = lines[4:8]
    assert run1["prompt"] == prompt  # escaping round-trips, UTF-8 included
    assert (run1["input_type"], run1["role"], run1["enable_thinking"], run1["keep_history"]) == (
        "prompt", "user", True, 1)
    assert (run2["role"], run2["keep_history"]) == ("tool", 0)
    if ABI13:
        assert run1["max_new_tokens"] == 0 and run1["sampling"] is None
        assert run2["max_new_tokens"] == 4
        assert run2["sampling"]["top_k"] == 3 and run2["sampling"]["frequency_penalty"] == 0.25
    else:
        assert "sampling" not in run1 and "max_new_tokens" not in run1
    for r, end in ((r1, end1), (r2, end2)):
        assert end["prefill_tokens"] == r.finish.prefill_tokens
        assert end["generate_tokens"] == r.finish.generate_tokens == len(r.tokens)
    assert end1["reason"] == "eos" and end1["generate_tokens"] == 10
    assert end1["cache_tokens"] == end1["prefill_tokens"] + 10
    assert end2["reason"] == ("length" if ABI13 else "eos")
    assert lines[9]["keep_system_prompt"] == 1
    assert lines[9]["start"] is None and lines[9]["end"] is None


def test_trace_run_end_reasons(tmp_path, monkeypatch, model, session):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("RKLLM_SIM_TRACE", str(trace))
    s = session(model(answer_tokens_min=10, answer_tokens_max=10), max_context_len=40,
                max_new_tokens=5)
    s.run("hi")                                                       # length
    s.on_event = lambda e: 1 if len(s.events) == 2 else 0
    s.run("hi")                                                       # pause
    s.on_event = lambda e: LIB.rkllm_abort(s.handle) if len(s.events) == 2 else 0
    s.run("hi")                                                       # abort
    s.on_event = None
    s.run("far too long for forty tokens " * 5)                       # context
    e = session(model(error_after_tokens=1))
    e.run("hi")                                                       # error
    u = session(model(answer_tokens_min=3, answer_tokens_max=3))
    u.run("hi")                                                       # eos
    ends = [ln for ln in read_trace(trace) if ln["fn"] == "run_end"]
    assert [ln["reason"] for ln in ends] == ["length", "pause", "abort", "context", "error",
                                             "eos"]
    assert [ln["generate_tokens"] for ln in ends] == [5, 2, 2, 0, 1, 3]
