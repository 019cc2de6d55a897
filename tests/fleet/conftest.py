"""pytest configuration for the fleet tests: real routers in front of several rkllmd boards.

    RKLLMD_BIN=$PWD/target/debug/rkllmd RKLLMD_LITELLM=/path/to/venv/bin/litellm \
        python3 -m pytest -q -s tests/fleet

scripts/test-all installs HAProxy (Debian's package) and LiteLLM's proxy (in its own
virtualenv, from tests/fleet/requirements-litellm.txt) first. Running without the binary,
HAProxy or LiteLLM is an error, not a skip.

LiteLLM's proxy takes tens of seconds to start: it is started with its own three boards when
the session starts, and comes up while the HAProxy tests run.
"""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fleet  # noqa: E402

_litellm = {}


def pytest_configure(config):
    binary = os.environ.get("RKLLMD_BIN")
    if not binary or not os.access(binary, os.X_OK):
        raise pytest.UsageError(f"RKLLMD_BIN={binary!r} is not an executable rkllmd")
    if not shutil.which("haproxy"):
        raise pytest.UsageError("haproxy is not installed (apt-get install haproxy)")
    litellm = os.environ.get("RKLLMD_LITELLM")
    if not litellm or not os.access(litellm, os.X_OK):
        raise pytest.UsageError(
            f"RKLLMD_LITELLM={litellm!r} is not LiteLLM's executable (see scripts/test-all)")


def pytest_sessionstart(session):
    boards = fleet.Fleet()
    _litellm["fleet"] = boards
    _litellm["proxy"] = fleet.LiteLlm(os.environ["RKLLMD_LITELLM"], boards)


def pytest_sessionfinish(session, exitstatus):
    if "proxy" in _litellm:
        _litellm["proxy"].close()
    if "fleet" in _litellm:
        _litellm["fleet"].close()


@pytest.fixture()
def litellm():
    """The LiteLLM proxy, once it answers, and its three boards (`.fleet`)."""
    proxy = _litellm["proxy"]
    proxy.wait_ready()
    return proxy
