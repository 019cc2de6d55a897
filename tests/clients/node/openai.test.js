// The official `openai` npm package against the real rkllmd, over TCP and over the Unix socket
// (through the client's custom-fetch option), with the simulator underneath: chat plain, streamed
// and with tools, the Responses API plain and streamed, and embeddings. Run by scripts/test-all:
//   RKLLMD_BIN=$PWD/target/debug/rkllmd node --test tests/clients/node/
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { startDaemon, unixFetch } from "./daemon.js";

const TOOLS = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string" } } },
  },
}];

let daemon;

before(async () => { daemon = await startDaemon(); });

after(async () => { await daemon?.stop(); });

const ask = (content) => [{ role: "user", content }];

for (const via of ["tcp", "unix"]) {
  describe(`over ${via}`, () => {
    let client;
    before(() => {
      client = via === "tcp"
        ? new OpenAI({ baseURL: `${daemon.base}/v1`, apiKey: "unused", maxRetries: 0 })
        : new OpenAI({ baseURL: "http://localhost/v1", apiKey: "unused", maxRetries: 0, fetch: unixFetch(daemon.socket) });
    });

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

    test("embeddings, base64 (the package's default) and float, agree", async () => {
      const batch = await client.embeddings.create({ model: "m", input: ["first", "second"] });
      assert.deepEqual(batch.data.map((e) => e.index), [0, 1]);
      const [a, b] = batch.data.map((e) => e.embedding);
      assert.notDeepEqual(a, b);
      assert.ok(Math.abs(Math.hypot(...a) - 1) < 1e-5);
      assert.ok(batch.usage.prompt_tokens > 0);
      const floats = await client.embeddings.create({ model: "m", input: "first", encoding_format: "float" });
      floats.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - a[i]) < 1e-6));
    });
  });
}
