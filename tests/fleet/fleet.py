"""Three rkllmd boards on loopback TCP, and the checks of one answer, shared by the router tests.

Each board is the real binary on its own Unix socket and TCP port, with the simulator under it
(a fast model file written here) and its own trace. Requests are classified from what the
client got, so that nothing can pass unnoticed:

- answered: a 200 whose body is complete in its API's terms (OpenAI: a finish_reason, and for a
  stream `data: [DONE]`; Ollama: `"done": true` last);
- refused: an error status with an error body in the API's shape;
- cut: a stream failed after it began and the client knows: the connection failed mid-answer
  and the client library said so (the chunked body never ended), or the stream ended with an
  error event (a board SIGKILLed while it streamed);
- truncated: a 200 that looks over but is not complete (must never happen);
- lost: no answer and no error before the timeout (must never happen).
"""
import concurrent.futures
import json
import os
import signal
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import httpx

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL_NAME = "qwen"
# 4 ms a token, answers capped by each request: a request takes a few tenths of a second, so
# a few dozen keep three boards busy without making the test slow.
MODEL = """rkllm-sim 1
name = qwen
load_ms = 0
prefill_us_per_token = 50
decode_us_per_token = 4000
answer_tokens_min = 3000
answer_tokens_max = 3000
"""


def binary():
    path = os.environ.get("RKLLMD_BIN")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"RKLLMD_BIN must point at a built rkllmd binary (got {path!r})")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Board:
    """One rkllmd instance: its own socket, port, trace and log."""

    def __init__(self, name, root, model):
        self.name = name
        self.dir = os.path.join(root, name)
        os.mkdir(self.dir)
        self.socket = os.path.join(self.dir, "rkllmd.sock")
        self.trace = os.path.join(self.dir, "trace.jsonl")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.port = free_port()
        self.log = open(self.log_path, "wb")
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, RKLLM_SIM_TRACE=self.trace)
        self.proc = subprocess.Popen(
            [binary(), "--model", model, "--model-name", MODEL_NAME, "--socket", self.socket,
             "--tcp", f"127.0.0.1:{self.port}", "--notify-fd", str(write_fd),
             "--drain-timeout", "30"],
            pass_fds=(write_fd,), env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as ready:
            if ready.read(1) != b"\n":
                raise RuntimeError(f"{name} did not become ready: {self.stderr()}")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stderr(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def trace_of(self, function):
        if not os.path.exists(self.trace):
            return []
        with open(self.trace) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [t for t in lines if t.get("fn") == function]

    def health(self):
        return httpx.get(f"http://{self.address}/health", timeout=5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Fleet:
    def __init__(self, count=3):
        self.root = tempfile.mkdtemp(prefix="rkllmd-fleet-")
        model = os.path.join(self.root, "fleet.rkllm")
        with open(model, "w") as f:
            f.write(MODEL)
        self.boards = []
        try:
            for i in range(count):
                self.boards.append(Board(f"board{i + 1}", self.root, model))
        except Exception:
            self.close()
            raise

    def board(self, name):
        return next(b for b in self.boards if b.name == name)

    def close(self):
        for b in self.boards:
            b.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ---- requests and their outcome ---------------------------------------------------------------

KINDS = ("openai-stream", "openai", "ollama-stream", "ollama")


def request_of(kind, tokens):
    """(path, body) of a chat of `kind` whose answer is capped at `tokens`."""
    messages = [{"role": "user", "content": "tell me about boards"}]
    if kind.startswith("openai"):
        return "/v1/chat/completions", {
            "model": MODEL_NAME, "messages": messages, "max_tokens": tokens,
            "stream": kind.endswith("stream")}
    return "/api/chat", {
        "model": MODEL_NAME, "messages": messages, "options": {"num_predict": tokens},
        "stream": kind.endswith("stream")}


def classify(kind, status, body, board):
    """'answered', 'refused' or 'truncated' for a response read whole. `board`: the board that
    answered (the router's header), None for the router's own answer (its 502 or 503 when no
    board could take the request): an error status, but in the router's shape."""
    text = body.decode("utf-8", errors="replace")
    if status != 200 and board is None:
        return "refused" if status >= 429 else "truncated"
    if status != 200:
        try:
            err = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            return "truncated"
        shaped = isinstance(err, dict) and "message" in err if kind.startswith("openai") \
            else isinstance(err, str)
        return "refused" if shaped else "truncated"
    try:
        if kind == "openai-stream":
            events = [e[len("data: "):] for e in text.split("\n\n") if e.startswith("data: ")]
            # A stream that failed after it began ends with an error event (rkllmd's and
            # LiteLLM's way of saying so): the client sees the failure.
            if events and events[-1] != "[DONE]" and "error" in json.loads(events[-1]):
                return "cut"
            if events[-2:-1] and "error" in json.loads(events[-2]):
                return "cut"
            if not events or events[-1] != "[DONE]":
                return "truncated"
            last = json.loads(events[-2])
            return "answered" if last["choices"][0]["finish_reason"] else "truncated"
        if kind == "openai":
            return "answered" if json.loads(text)["choices"][0]["finish_reason"] else "truncated"
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if kind == "ollama-stream" and lines and "error" in lines[-1]:
            return "cut"
        return "answered" if lines and lines[-1].get("done") is True else "truncated"
    except (ValueError, KeyError, IndexError, TypeError):
        return "truncated"


def haproxy_board(headers):
    """The board HAProxy sent the request to (the recipe's X-Rkllmd-Board header)."""
    return headers.get("x-rkllmd-board")


def send(client, base, kind, tokens, timeout=30.0, board_of=haproxy_board, headers=None):
    """One request through the router: (outcome, board that answered or None, detail)."""
    path, body = request_of(kind, tokens)
    board = None
    try:
        with client.stream("POST", base + path, json=body, timeout=timeout,
                           headers=headers) as r:
            board = board_of(r.headers)
            data = b"".join(r.iter_raw())
            outcome = classify(kind, r.status_code, data, board)
            detail = r.status_code if outcome != "truncated" else (r.status_code, data[-400:])
            return outcome, board, detail
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        # The connection ended mid-answer and the library noticed: an error the client sees.
        return "cut", board, repr(e)
    except httpx.TimeoutException as e:
        return "lost", board, repr(e)


# ---- LiteLLM's proxy ----------------------------------------------------------------------------

MASTER_KEY = "sk-rkllmd-fleet-test"


def litellm_config(boards):
    """The recipe itself, with only its boards' addresses changed."""
    with open(os.path.join(REPO, "board", "fleet", "litellm.yaml")) as f:
        text = f.read()
    examples = ["http://192.0.2.11:8080/v1", "http://192.0.2.12:8080/v1",
                "http://192.0.2.13:8080/v1"]
    for example, board in zip(examples, boards):
        assert example in text, example
        text = text.replace(example, f"http://{board.address}/v1")
    return text


class LiteLlm:
    """LiteLLM's proxy (its own virtualenv's `litellm`, RKLLMD_LITELLM) in front of a fleet.
    Started at the beginning of the session: it takes tens of seconds to come up, while the
    HAProxy tests run."""

    def __init__(self, executable, fleet):
        self.fleet = fleet
        self.port = free_port()
        cfg = os.path.join(fleet.root, "litellm.yaml")
        with open(cfg, "w") as f:
            f.write(litellm_config(fleet.boards))
        self.log_path = os.path.join(fleet.root, "litellm.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, LITELLM_MASTER_KEY=MASTER_KEY, RKLLMD_API_KEY="none",
                   LITELLM_LOG="ERROR", NO_DOCS="True")
        # Its own directory: the proxy writes files where it runs.
        self.proc = subprocess.Popen(
            [executable, "--config", cfg, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=fleet.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout=120.0):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"the LiteLLM proxy exited: {self.output()[-3000:]}")
            try:
                return httpx.get(self.base + "/health/liveliness", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_for("the LiteLLM proxy to start", up, timeout=timeout)

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ---- the run both routers get ------------------------------------------------------------------

OUTCOMES = ("answered", "refused", "cut", "truncated", "lost")


def busy(board, queued=0):
    """The board is running a generation and has at least `queued` more waiting (asked
    directly, not through the router)."""
    try:
        health = board.health().json()
    except (httpx.TransportError, ValueError):
        return False
    return health["running"] and health["queue_depth"] >= queued


def drain_and_kill_under_load(fleet, base, kinds, requests, workers, tokens, **send_args):
    """`requests` chats of `kinds` through the router at `base`, `workers` at a time; the
    first board drained (SIGQUIT) and the second killed (SIGKILL) while they work. Returns
    the outcomes [(i, kind, outcome, board, detail, when)] and when the drain began."""
    drained, killed = fleet.boards[0], fleet.boards[1]
    outcomes = []
    lock = threading.Lock()

    def one(i):
        kind = kinds[i % len(kinds)]
        with httpx.Client() as client:
            outcome, board, detail = send(client, base, kind, tokens, **send_args)
        with lock:
            outcomes.append((i, kind, outcome, board, detail, time.monotonic()))

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, i) for i in range(requests)]
        wait_for("a few answers", lambda: len(outcomes) >= requests // 5)
        # Running one and one queued: work that cannot end before the signal arrives.
        wait_for("the board to drain to be busy", lambda: busy(drained, queued=1))
        drained_at = time.monotonic()
        drained.proc.send_signal(signal.SIGQUIT)
        wait_for("more answers", lambda: len(outcomes) >= 2 * requests // 5)
        wait_for("the board to kill to be busy", lambda: busy(killed))
        killed.proc.send_signal(signal.SIGKILL)
        for f in futures:
            f.result(timeout=60)
    return outcomes, drained_at


def check_outcomes(router, fleet, outcomes, requests, drained_at):
    """Prints the figures, then checks: nothing truncated or lost, cuts only by the killed
    board, and the drained board finished what it had, then exited 0 with its socket removed."""
    drained, killed = fleet.boards[0], fleet.boards[1]
    counts = {k: sum(1 for o in outcomes if o[2] == k) for k in OUTCOMES}
    by_router = sum(1 for o in outcomes if o[2] == "refused" and o[3] is None)
    by_board = {b.name: sum(1 for o in outcomes if o[2] == "answered" and o[3] == b.name)
                for b in fleet.boards}
    print(f"\nfleet ({router}): {requests} requests: answered {counts['answered']}, "
          f"refused {counts['refused']} ({by_router} by the router), "
          f"cut by the SIGKILLed board {counts['cut']}, truncated {counts['truncated']}, "
          f"lost {counts['lost']}; answered per board {by_board}")
    bad = [o for o in outcomes if o[2] in ("truncated", "lost")]
    assert not bad, bad
    assert sum(counts.values()) == requests
    # A cut is only ever the killed board's doing, and the client saw it fail.
    assert all(o[3] == killed.name for o in outcomes if o[2] == "cut"), outcomes
    assert counts["answered"] >= requests // 2, counts

    # The drained board finished what it had: answers it completed after SIGQUIT, no run
    # aborted, every run ended normally; then it exited 0 and removed its socket.
    assert drained.proc.wait(timeout=30) == 0, drained.stderr()
    assert not os.path.exists(drained.socket)
    finished_after = [o for o in outcomes
                      if o[3] == drained.name and o[2] == "answered" and o[5] > drained_at]
    assert finished_after, "the drained board had work when it was told to drain"
    assert drained.trace_of("rkllm_abort") == []
    ends = drained.trace_of("run_end")
    assert ends and all(e["reason"] in ("eos", "length") for e in ends), ends
    assert len(drained.trace_of("rkllm_run")) == len(ends)
    assert "drained: every request finished" in drained.stderr()
    assert killed.proc.wait(timeout=10) == -signal.SIGKILL


def check_hangup_aborts(fleet, url, headers, board_of):
    """A client that hangs up at the router after two pieces of a stream: the board that ran
    it aborts the generation."""
    body = {"model": MODEL_NAME, "stream": True,
            "messages": [{"role": "user", "content": "a long story"}]}
    with httpx.Client() as client:
        with client.stream("POST", url, json=body, headers=headers, timeout=30) as r:
            assert r.status_code == 200
            name = board_of(r.headers)
            # Tokens arrive through the router as they come, not at the end of the answer.
            chunks = r.iter_raw()
            next(chunks)
            next(chunks)
    board = fleet.board(name)
    wait_for("the board to abort the run",
             lambda: [e for e in board.trace_of("run_end") if e["reason"] == "abort"],
             timeout=20)
    assert len(board.trace_of("rkllm_abort")) == 1
    ends = board.trace_of("run_end")
    assert ends[-1]["generate_tokens"] < 3000, ends
