"""Starts the real rkllmd binary for the client-library tests (RKLLMD_BIN) and stops it."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def binary():
    path = os.environ.get("RKLLMD_BIN")
    if not path or not os.access(path, os.X_OK):
        raise pytest.UsageError(f"RKLLMD_BIN must point at a built rkllmd binary (got {path!r})")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """rkllmd on a Unix socket and a loopback TCP port, with the simulator's trace.

    `log` (an open file) takes the daemon's stderr for a long run, such as the Open WebUI test's,
    whose output no one reads while it runs (a pipe would fill and block the daemon)."""

    def __init__(self, model="vendor/rkllm-sim/models/fast.rkllm", extra=(), log=None):
        self.dir = tempfile.mkdtemp(prefix="rkllmd-client-")
        self.socket = os.path.join(self.dir, "rkllmd.sock")
        self.trace = os.path.join(self.dir, "trace.jsonl")
        self.port = free_port()
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, RKLLM_SIM_TRACE=self.trace)
        self.proc = subprocess.Popen(
            [binary(), "--model", os.path.join(REPO, model), "--socket", self.socket,
             "--tcp", f"127.0.0.1:{self.port}", "--notify-fd", str(write_fd), *extra],
            pass_fds=(write_fd,), env=env, stdout=subprocess.DEVNULL,
            stderr=log if log is not None else subprocess.PIPE)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as ready:
            if ready.read(1) != b"\n":
                said = self.proc.stderr.read().decode() if log is None else f"see {log.name}"
                raise RuntimeError(f"rkllmd did not become ready: {said}")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)
        assert code == 0, f"rkllmd exited with {code}"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A thinking Qwen3 model under rkllmd's own template, so tools and reasoning both show."""
    model = tmp_path_factory.mktemp("model") / "m.rkllm"
    model.write_text("rkllm-sim 1\nname = m\nthinking = 1\nanswer_tokens_min = 5\nanswer_tokens_max = 12\n")
    d = Daemon(model=str(model), extra=("--chat-template", "qwen3"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def small_context(tmp_path_factory):
    """A daemon whose context holds only 64 tokens, for over-long prompts."""
    d = Daemon(extra=("--max-context-len", "64"))
    yield d
    d.stop()



@pytest.fixture(scope="module")
def vision():
    """The shipped vision pair: vision-demo.rkllm with its encoder vision-demo.rknn beside it."""
    d = Daemon(model="vendor/rkllm-sim/models/vision-demo.rkllm")
    yield d
    d.stop()


def png(width=16, height=12):
    """A small RGB PNG (a gradient), written with the standard library alone."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes((x * 16 + y * 8) % 256 for x in range(width) for _ in range(3))
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def multimodal_runs(d):
    """The multimodal inputs the simulated runtime was given."""
    import json
    with open(d.trace) as f:
        return [v for v in map(json.loads, filter(str.strip, f)) if v["fn"] == "multimodal"]
