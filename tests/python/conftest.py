"""pytest configuration for the rkllm-sim tests.

The tests need the simulator library and the ABI it was built for:
    RKLLM_SIM_LIB=/path/to/librkllmrt.so RKLLM_SIM_ABI=1.3 python3 -m pytest -q tests/python
Running without them is an error, not a skip: a green run must mean the library was tested.
"""
import ctypes
import os

import pytest


def pytest_configure(config):
    lib = os.environ.get("RKLLM_SIM_LIB")
    abi = os.environ.get("RKLLM_SIM_ABI")
    if not lib:
        raise pytest.UsageError("RKLLM_SIM_LIB is not set: point it at the simulator's librkllmrt.so")
    if not os.path.isfile(lib):
        raise pytest.UsageError(f"RKLLM_SIM_LIB={lib} does not exist")
    if abi not in ("1.2", "1.3"):
        raise pytest.UsageError(f"RKLLM_SIM_ABI must be 1.2 or 1.3, got {abi!r}")
    # Structs of the wrong ABI would crash the test process instead of failing a test.
    version = ctypes.CDLL(lib).rkllm_sim_version
    version.restype = ctypes.c_char_p
    built = version().decode()
    if not built.endswith(f"(abi {abi})"):
        raise pytest.UsageError(f"{lib} is {built!r}, not built for RKLLM_SIM_ABI={abi}")


def pytest_report_header(config):
    return f"rkllm-sim: {os.environ.get('RKLLM_SIM_LIB')} (abi {os.environ.get('RKLLM_SIM_ABI')})"
