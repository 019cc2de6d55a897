// The official `openai` npm package against the real rkllmd over TCP (the package's fetch has
// no Unix-socket option without undici), with the simulator underneath: chat plain, streamed
// and with tools, and the Responses API plain and streamed. Run by scripts/test-all:
//   RKLLMD_BIN=$PWD/target/debug/rkllmd node --test tests/clients/node/
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import OpenAI from "openai";

const TOOLS = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string" } } },
  },
}];

let daemon, dir, client;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  const bin = process.env.RKLLMD_BIN;
  assert.ok(bin, "RKLLMD_BIN must point at a built rkllmd binary");
  dir = mkdtempSync(join(tmpdir(), "rkllmd-node-"));
  const model = join(dir, "m.rkllm");
  writeFileSync(model, "rkllm-sim 1\nname = m\nthinking = 1\nanswer_tokens_min = 5\nanswer_tokens_max = 12\n");
  const port = await freePort();
  // fd 3 is the readiness pipe: the daemon writes a newline once it serves.
  daemon = spawn(bin, ["--model", model, "--socket", join(dir, "s.sock"), "--tcp", `127.0.0.1:${port}`,
    "--chat-template", "qwen3", "--notify-fd", "3"], { stdio: ["ignore", "ignore", "inherit", "pipe"] });
  await new Promise((resolve, reject) => {
    daemon.stdio[3].once("data", resolve);
    daemon.once("exit", (code) => reject(new Error(`rkllmd exited with ${code} before it was ready`)));
  });
  client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  if (daemon && daemon.exitCode === null) {
    const exited = new Promise((resolve) => daemon.once("exit", resolve));
    daemon.kill("SIGTERM");
    assert.equal(await exited, 0);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ask = (content) => [{ role: "user", content }];

test("chat, plain and streamed, gives the same answer with its reasoning apart", async () => {
  const whole = await client.chat.completions.create({ model: "m", messages: ask("Is 17 prime?") });
  const message = whole.choices[0].message;
  assert.equal(whole.choices[0].finish_reason, "stop");
  assert.ok(message.content && !message.content.includes("think>"));
  assert.equal(message.refusal, null);
  assert.ok(whole.usage.completion_tokens > 0);

  const stream = await client.chat.completions.create({
    model: "m", messages: ask("Is 17 prime?"), stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  const finish = [];
  for await (const chunk of stream) {
    if (chunk.choices.length === 0) continue;
    text += chunk.choices[0].delta.content ?? "";
    if (chunk.choices[0].finish_reason) finish.push(chunk.choices[0].finish_reason);
  }
  assert.deepEqual(finish, ["stop"]);
  assert.equal(text, message.content);
});

test("chat with tools comes back as a structured call", async () => {
  const r = await client.chat.completions.create({
    model: "m", messages: ask("What is the weather in Paris? Use get_weather."), tools: TOOLS,
  });
  assert.equal(r.choices[0].finish_reason, "tool_calls");
  const [call] = r.choices[0].message.tool_calls;
  assert.equal(call.function.name, "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments), "object");
});

test("responses, plain and streamed", async () => {
  const r = await client.responses.create({ model: "m", input: "Is 17 prime?", instructions: "Answer." });
  assert.equal(r.status, "completed");
  assert.deepEqual(r.output.map((i) => i.type), ["reasoning", "message"]);
  assert.ok(r.output_text.length > 0);

  const stream = await client.responses.create({
    model: "m", input: "Is 17 prime?", instructions: "Answer.", stream: true,
  });
  const types = [];
  let text = "";
  let last;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
    last = event;
  }
  assert.equal(types[0], "response.created");
  assert.equal(last.type, "response.completed");
  assert.equal(text, r.output_text);
});

test("responses with function tools give a function_call item", async () => {
  const r = await client.responses.create({
    model: "m", input: "What is the weather in Paris? Use get_weather.",
    tools: [{ type: "function", name: "get_weather", parameters: TOOLS[0].function.parameters, strict: false }],
  });
  const calls = r.output.filter((i) => i.type === "function_call");
  assert.deepEqual(calls.map((c) => c.name), ["get_weather"]);
  assert.ok(calls[0].call_id);
});
