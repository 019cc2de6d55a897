// The Vercel AI SDK 6 (`ai`, the last major that runs on Node 20) against the real rkllmd, with
// the simulator underneath, over TCP and over the Unix socket (through the providers' custom
// fetch): @ai-sdk/openai, whose default model calls the Responses API, its .chat() model (chat
// completions), and @ai-sdk/openai-compatible, each for generateText, streamText and tools
// declared with the SDK's own tool() helper; embed and embedMany through both providers. Run by scripts/test-all:
//   RKLLMD_BIN=$PWD/target/debug/rkllmd node --test tests/clients/node/
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { embed, embedMany, generateText, streamText, tool } from "ai";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { z } from "zod";
import { startDaemon, unixFetch } from "./daemon.js";

const tools = {
  get_weather: tool({ description: "The weather in a city.", inputSchema: z.object({ city: z.string() }) }),
};

let daemon;
before(async () => { daemon = await startDaemon(); });
after(async () => { await daemon?.stop(); });

function transport(via) {
  return via === "tcp"
    ? { baseURL: `${daemon.base}/v1` }
    : { baseURL: "http://localhost/v1", fetch: unixFetch(daemon.socket) };
}

// Each model with the id prefix that shows which endpoint answered it.
const MODELS = {
  "openai (Responses API)": [(via) => createOpenAI({ apiKey: "unused", ...transport(via) })("m"), "resp_"],
  "openai.chat (chat completions)":
    [(via) => createOpenAI({ apiKey: "unused", ...transport(via) }).chat("m"), "chatcmpl-"],
  "openai-compatible":
    [(via) => createOpenAICompatible({ name: "rkllmd", ...transport(via) }).chatModel("m"), "chatcmpl-"],
};

for (const via of ["tcp", "unix"]) {
  for (const [name, [make, idPrefix]] of Object.entries(MODELS)) {
    describe(`${name} over ${via}`, () => {
      test("generateText and streamText give the same answer", async () => {
        const model = make(via);
        const whole = await generateText({ model, prompt: "Is 17 prime?", maxRetries: 0 });
        assert.ok(whole.response.id.startsWith(idPrefix), whole.response.id);
        assert.equal(whole.finishReason, "stop");
        assert.ok(whole.text.length > 0 && !whole.text.includes("think>"));
        assert.ok(whole.usage.outputTokens > 0);
        const streamed = streamText({ model, prompt: "Is 17 prime?", maxRetries: 0 });
        let text = "";
        for await (const delta of streamed.textStream) text += delta;
        assert.equal(text, whole.text);
        assert.equal(await streamed.finishReason, "stop");
      });

      test("tools declared with tool() come back as a typed tool call", async () => {
        const r = await generateText({
          model: make(via), prompt: "What is the weather in Paris? Use get_weather.", tools, maxRetries: 0,
        });
        assert.equal(r.finishReason, "tool-calls");
        assert.deepEqual(r.toolCalls.map((c) => c.toolName), ["get_weather"]);
        assert.equal(typeof r.toolCalls[0].input, "object");
      });
    });
  }
}

for (const via of ["tcp", "unix"]) {
  const EMBEDDERS = {
    openai: () => createOpenAI({ apiKey: "unused", ...transport(via) }).embedding("m"),
    "openai-compatible": () => createOpenAICompatible({ name: "rkllmd", ...transport(via) }).textEmbeddingModel("m"),
  };
  for (const [name, make] of Object.entries(EMBEDDERS)) {
    test(`${name} embedMany and embed over ${via} agree`, async () => {
      const many = await embedMany({ model: make(), values: ["first", "second"], maxRetries: 0 });
      assert.equal(many.embeddings.length, 2);
      assert.notDeepEqual(many.embeddings[0], many.embeddings[1]);
      assert.ok(Math.abs(Math.hypot(...many.embeddings[0]) - 1) < 1e-5);
      const one = await embed({ model: make(), value: "first", maxRetries: 0 });
      one.embedding.forEach((x, i) => assert.ok(Math.abs(x - many.embeddings[0][i]) < 1e-6));
    });
  }
}
