// Starts the real rkllmd (RKLLMD_BIN) for the Node client tests, with the simulator underneath,
// on a loopback TCP port and a Unix socket, and stops it. Shared by every *.test.js here.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A thinking, tool-calling simulated model `m` (template qwen3), served until `stop()`. */
export async function startDaemon() {
  const bin = process.env.RKLLMD_BIN;
  assert.ok(bin, "RKLLMD_BIN must point at a built rkllmd binary");
  const dir = mkdtempSync(join(tmpdir(), "rkllmd-node-"));
  const model = join(dir, "m.rkllm");
  writeFileSync(model, "rkllm-sim 1\nname = m\nthinking = 1\nanswer_tokens_min = 5\nanswer_tokens_max = 12\n");
  const port = await freePort();
  const socket = join(dir, "s.sock");
  // fd 3 is the readiness pipe: the daemon writes a newline once it serves.
  const proc = spawn(bin, ["--model", model, "--socket", socket, "--tcp", `127.0.0.1:${port}`,
    "--chat-template", "qwen3", "--notify-fd", "3"], { stdio: ["ignore", "ignore", "inherit", "pipe"] });
  await new Promise((resolve, reject) => {
    proc.stdio[3].once("data", resolve);
    proc.once("exit", (code) => reject(new Error(`rkllmd exited with ${code} before it was ready`)));
  });
  return {
    base: `http://127.0.0.1:${port}`,
    socket,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((resolve) => proc.once("exit", resolve));
        proc.kill("SIGTERM");
        assert.equal(await exited, 0);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A `fetch` that sends every request over the Unix socket at `socketPath`, whatever the URL's
 * host. Node 20's global fetch has no socket option (undici's Agent is not exposed), so clients
 * that accept a custom fetch, as the `ollama` package does, reach the socket through this.
 */
export function unixFetch(socketPath) {
  return (url, init = {}) => new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers = init.headers instanceof Headers ? Object.fromEntries(init.headers) : init.headers;
    const req = request({ socketPath, path: u.pathname + u.search, method: init.method ?? "GET", headers },
      (res) => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) h.set(k, Array.isArray(v) ? v.join(", ") : v);
        resolve(new Response(Readable.toWeb(res), { status: res.statusCode, headers: h }));
      });
    req.on("error", reject);
    init.signal?.addEventListener("abort", () => req.destroy(new Error("aborted")));
    req.end(init.body);
  });
}
