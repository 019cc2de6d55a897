"""Open WebUI from PyPI, started as `open-webui serve` with its default settings.

Only the environment a user would set for a server that has no internet and talks to rkllmd is
given: the two connection URLs (Ollama's and OpenAI's) and offline mode. Everything else (auth,
function calling, background tasks) is Open WebUI's own default, because the point of the test is
what a user who installs it and points it at rkllmd gets.
"""
import os
import subprocess
import time
import urllib.request

from daemon import free_port

# Open WebUI's first start runs its database migrations and imports torch: minutes on a busy
# 2-core machine. The loop returns as soon as /health answers.
START_TIMEOUT_S = 900


class OpenWebUI:
    def __init__(self, rkllmd_base, workdir, log_path):
        self.port = free_port()
        data = os.path.join(workdir, "data")
        os.makedirs(data, exist_ok=True)
        env = dict(
            os.environ,
            # The connections: rkllmd answers both APIs on one port.
            OLLAMA_BASE_URL=rkllmd_base,
            OPENAI_API_BASE_URL=f"{rkllmd_base}/v1",
            OPENAI_API_KEY="rkllmd-needs-no-key",
            # A fresh instance every run, in the run's own directory.
            DATA_DIR=data,
            WEBUI_SECRET_KEY=os.urandom(16).hex(),
            # No network: Open WebUI's own offline switch (no model downloads, no update check;
            # it sets HF_HUB_OFFLINE), and the telemetry switches of the libraries it bundles.
            OFFLINE_MODE="true",
            HF_HUB_OFFLINE="1",
            ANONYMIZED_TELEMETRY="false",
            DO_NOT_TRACK="true",
            SCARF_NO_ANALYTICS="true",
        )
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["open-webui", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_healthy(log_path)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _wait_healthy(self, log_path):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"open-webui exited with {self.proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"open-webui did not answer /health in {START_TIMEOUT_S} s; see {log_path}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
