// The official `ollama` npm package against the real rkllmd, with the simulator underneath, over
// TCP and over the Unix socket (through the client's custom-fetch option): chat plain, streamed
// and with tools, generate, embed and embeddings, list and show. Run by scripts/test-all:
//   RKLLMD_BIN=$PWD/target/debug/rkllmd node --test tests/clients/node/
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Ollama } from "ollama";
import { startDaemon, unixFetch } from "./daemon.js";

const TOOLS = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];

const ask = (content) => [{ role: "user", content }];

let daemon;
before(async () => { daemon = await startDaemon(); });
after(async () => { await daemon?.stop(); });

for (const via of ["tcp", "unix"]) {
  describe(`over ${via}`, () => {
    const client = () => via === "tcp"
      ? new Ollama({ host: daemon.base })
      : new Ollama({ host: "http://localhost", fetch: unixFetch(daemon.socket) });

    test("list and show name the model and its capabilities", async () => {
      const listed = await client().list();
      assert.deepEqual(listed.models.map((m) => m.model), ["m:latest"]);
      const shown = await client().show({ model: "m" });
      assert.deepEqual(shown.capabilities, ["completion", "tools", "thinking"]);
    });

    test("chat, plain and streamed, gives the same answer with its thinking apart", async () => {
      const whole = await client().chat({ model: "m", messages: ask("Is 17 prime?"), think: true });
      assert.equal(whole.done, true);
      assert.equal(whole.done_reason, "stop");
      assert.ok(whole.message.content.length > 0 && !whole.message.content.includes("think>"));
      assert.ok(whole.message.thinking.length > 0);
      assert.ok(whole.eval_count > 0);

      const stream = await client().chat({ model: "m", messages: ask("Is 17 prime?"), think: true, stream: true });
      let text = "", thinking = "", last;
      for await (const part of stream) {
        text += part.message.content;
        thinking += part.message.thinking ?? "";
        last = part;
      }
      assert.equal(last.done, true);
      assert.equal(last.eval_count, whole.eval_count);
      assert.equal(text, whole.message.content);
      assert.equal(thinking, whole.message.thinking);
    });

    test("chat with tools comes back as a structured call with object arguments", async () => {
      const r = await client().chat({
        model: "m", messages: ask("What is the weather in Paris? Use get_weather."), tools: TOOLS,
      });
      const calls = r.message.tool_calls;
      assert.deepEqual(calls.map((c) => c.function.name), ["get_weather"]);
      assert.equal(typeof calls[0].function.arguments, "object");
    });

    test("generate, plain and streamed, gives the same text", async () => {
      const whole = await client().generate({ model: "m", prompt: "Is 17 prime?", think: false });
      assert.equal(whole.done, true);
      assert.ok(whole.response.length > 0);
      const stream = await client().generate({ model: "m", prompt: "Is 17 prime?", think: false, stream: true });
      let text = "";
      for await (const part of stream) text += part.response;
      assert.equal(text, whole.response);
    });

    test("embed and the older embeddings give the same unit vectors", async () => {
      const batch = await client().embed({ model: "m", input: ["first", "second"] });
      assert.equal(batch.embeddings.length, 2);
      assert.notDeepEqual(batch.embeddings[0], batch.embeddings[1]);
      for (const v of batch.embeddings) assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
      assert.ok(batch.prompt_eval_count > 0);
      const legacy = await client().embeddings({ model: "m", prompt: "first" });
      assert.equal(legacy.embedding.length, batch.embeddings[0].length);
      legacy.embedding.forEach((x, i) => assert.ok(Math.abs(x - batch.embeddings[0][i]) < 1e-6));
    });

    test("an unknown model is a ResponseError with the status", async () => {
      await assert.rejects(client().chat({ model: "nope", messages: ask("hi") }),
        (e) => e.name === "ResponseError" && e.status_code === 404);
    });
  });
}
