"""The HAProxy recipe (board/fleet/haproxy.cfg), run for real in front of three rkllmd boards:
concurrent chats of both APIs, streamed and not; one board drained (SIGQUIT) and one killed
(SIGKILL) while they work; every request answered whole or refused or cut with an error the
client sees, none truncated, none lost; the drained board finished what it had; and a client
that hangs up at the router has its generation aborted on the board."""
import os
import subprocess

import httpx
import pytest

from fleet import (KINDS, REPO, Fleet, check_hangup_aborts, check_outcomes,
                   drain_and_kill_under_load, free_port, haproxy_board, wait_for)

REQUESTS = 60
WORKERS = 12
TOKENS = 40


def haproxy_config(boards, port):
    """The recipe itself, with only its listening address and its boards' addresses changed."""
    with open(os.path.join(REPO, "board", "fleet", "haproxy.cfg")) as f:
        text = f.read()
    assert "bind :8080" in text
    text = text.replace("bind :8080", f"bind 127.0.0.1:{port}")
    lines = [line for line in text.splitlines() if not line.strip().startswith("server board")]
    # The backend is the file's last section: its servers go at the end.
    lines += [f"    server {b.name} {b.address}" for b in boards]
    return "\n".join(lines) + "\n"


@pytest.fixture()
def fleet():
    f = Fleet()
    yield f
    f.close()


@pytest.fixture()
def router(fleet):
    port = free_port()
    cfg = os.path.join(fleet.root, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(haproxy_config(fleet.boards, port))
    log = open(os.path.join(fleet.root, "haproxy.log"), "wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(base + "/v1/models", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for("HAProxy to answer", up)
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_a_drained_and_a_killed_board_lose_no_request(fleet, router):
    outcomes, drained_at = drain_and_kill_under_load(
        fleet, router, KINDS, REQUESTS, WORKERS, TOKENS)
    check_outcomes("HAProxy", fleet, outcomes, REQUESTS, drained_at)


def test_a_client_hanging_up_at_the_router_aborts_the_generation(fleet, router):
    r = httpx.post(router + "/api/chat", timeout=30, json={
        "model": "qwen", "messages": [{"role": "user", "content": "hi"}],
        "options": {"num_predict": 3}})
    assert r.status_code == 200 and r.headers["x-accel-buffering"] == "no"
    check_hangup_aborts(fleet, router + "/v1/chat/completions", None, haproxy_board)
