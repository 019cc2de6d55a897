"""NPU memory and handles (rknn-llm#437, #314): models load into one IOMMU domain
(extend_param.base_domain_id) until they take about 4 GB together; the next rkllm_init fails to
allocate, and succeeds in another domain or once a handle is destroyed. rkllama (PR #63) reports
that models cannot share a process at all: RKLLM_SIM_MAX_HANDLES=1 simulates that kind."""
import os
import subprocess
import sys

from test_sim import LIB, Session, model

__all__ = ["model"]  # fixtures used by the tests below


def open_in(model_path, domain):
    ext = LIB.rkllm_createDefaultParam().extend_param
    ext.base_domain_id = domain
    return Session(model_path, extend_param=ext)


def test_a_domain_holds_about_4_gb_of_models(model, capfd):
    big = model(npu_memory_mb=1700)  # Qwen3-1.7B-sized: two fit, the third does not (#437)
    first, second = open_in(big, 0), open_in(big, 0)
    assert first.init_rc == 0 and second.init_rc == 0
    third = open_in(big, 0)
    assert third.init_rc == -1 and not third.handle.value
    err = capfd.readouterr().err
    assert "failed to malloc npu memory" in err and "rkllm_init failed" in err
    # Another domain has its own memory; destroying a handle gives its share back.
    other = open_in(big, 1)
    assert other.init_rc == 0
    assert first.destroy() == 0
    again = open_in(big, 0)
    assert again.init_rc == 0
    for s in (second, other, again):
        assert s.destroy() == 0


def test_models_that_declare_no_memory_are_not_counted(model):
    opened = [open_in(model(), 0) for _ in range(8)]
    assert all(s.init_rc == 0 for s in opened)
    for s in opened:
        assert s.destroy() == 0


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from test_sim import Session
a, b = Session(sys.argv[2]), Session(sys.argv[2])
assert a.init_rc == 0 and b.init_rc == -1, (a.init_rc, b.init_rc)
assert a.destroy() == 0
c = Session(sys.argv[2])
assert c.init_rc == 0 and c.destroy() == 0
print("ok")
"""


def test_one_handle_a_process_when_asked(model):
    # In a child process: the limit is read at each init and must not reach the other tests.
    env = dict(os.environ, RKLLM_SIM_MAX_HANDLES="1")
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.dirname(__file__), model()],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "another model is loaded in this process" in out.stderr
