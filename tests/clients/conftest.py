"""pytest configuration for the client-compatibility tests.

They run the real daemon, so they need its binary:
    RKLLMD_BIN=$PWD/target/debug/rkllmd python3 -m pytest -q tests/clients
Running without it is an error, not a skip: a green run must mean the daemon was tested.
"""
import os

import pytest


def pytest_configure(config):
    binary = os.environ.get("RKLLMD_BIN")
    if not binary:
        raise pytest.UsageError("RKLLMD_BIN is not set: point it at target/debug/rkllmd")
    if not os.access(binary, os.X_OK):
        raise pytest.UsageError(f"RKLLMD_BIN={binary} is not an executable file")


def pytest_report_header(config):
    return f"rkllmd: {os.environ.get('RKLLMD_BIN')}"
