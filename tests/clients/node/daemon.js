// Starts the real rkllmd (RKLLMD_BIN) for the Node client tests, with the simulator underneath,
// on a loopback TCP port and a Unix socket, and stops it. Shared by every *.test.js here.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { crc32, deflateSync } from "node:zlib";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));

/** The shipped vision pair: vision-demo.rkllm with its encoder vision-demo.rknn beside it. */
export const VISION_MODEL = join(REPO, "vendor/rkllm-sim/models/vision-demo.rkllm");

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * A thinking, tool-calling simulated model `m` (template qwen3), or the model file `model` with
 * its own settings, served until `stop()`.
 */
export async function startDaemon({ model } = {}) {
  const bin = process.env.RKLLMD_BIN;
  assert.ok(bin, "RKLLMD_BIN must point at a built rkllmd binary");
  const dir = mkdtempSync(join(tmpdir(), "rkllmd-node-"));
  const args = model ? ["--model", model] : ["--model", join(dir, "m.rkllm"), "--chat-template", "qwen3"];
  if (!model) {
    writeFileSync(args[1], "rkllm-sim 1\nname = m\nthinking = 1\nanswer_tokens_min = 5\nanswer_tokens_max = 12\n");
  }
  const port = await freePort();
  const socket = join(dir, "s.sock");
  const trace = join(dir, "trace.jsonl");
  // fd 3 is the readiness pipe: the daemon writes a newline once it serves.
  const proc = spawn(bin, [...args, "--socket", socket, "--tcp", `127.0.0.1:${port}`, "--notify-fd", "3"],
    { stdio: ["ignore", "ignore", "inherit", "pipe"], env: { ...process.env, RKLLM_SIM_TRACE: trace } });
  await new Promise((resolve, reject) => {
    proc.stdio[3].once("data", resolve);
    proc.once("exit", (code) => reject(new Error(`rkllmd exited with ${code} before it was ready`)));
  });
  return {
    base: `http://127.0.0.1:${port}`,
    socket,
    /** The multimodal inputs the simulated runtime was given so far. */
    multimodalRuns() {
      let text = "";
      try { text = readFileSync(trace, "utf8"); } catch { /* no run yet */ }
      return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l)).filter((v) => v.fn === "multimodal");
    },
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

/** A small RGB PNG (a gradient), written with Node's zlib alone. */
export function png(width = 16, height = 12) {
  const chunk = (kind, data) => {
    const body = Buffer.concat([Buffer.from(kind, "latin1"), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, RGB, no interlace
  const rows = [];
  for (let y = 0; y < height; y++) {
    rows.push(0); // filter: none
    for (let x = 0; x < width; x++) rows.push(...Array(3).fill((x * 16 + y * 8) % 256));
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header), chunk("IDAT", deflateSync(Buffer.from(rows))), chunk("IEND", Buffer.alloc(0))]);
}
