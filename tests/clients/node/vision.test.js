// Images through the official `openai` and `ollama` npm packages against the real rkllmd serving
// the shipped vision pair (vision-demo.rkllm and its encoder), with the simulators underneath: an
// answer comes back and the runtime was given the image's embeddings. Run by scripts/test-all:
//   RKLLMD_BIN=$PWD/target/debug/rkllmd node --test tests/clients/node/
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { png, startDaemon, VISION_MODEL } from "./daemon.js";

let daemon;

before(async () => { daemon = await startDaemon({ model: VISION_MODEL }); });

after(async () => { await daemon?.stop(); });

/** The (images, embedding floats) of the runtime's multimodal runs since `from`. */
const runsSince = (from) => daemon.multimodalRuns().slice(from).map((r) => [r.n_image, r.embed]);

test("openai: a chat with an image_url data URL is answered from the image", async () => {
  const client = new OpenAI({ baseURL: `${daemon.base}/v1`, apiKey: "unused", maxRetries: 0 });
  const from = daemon.multimodalRuns().length;
  const url = `data:image/png;base64,${png().toString("base64")}`;
  const r = await client.chat.completions.create({
    model: "vision-demo",
    max_tokens: 4,
    messages: [{ role: "user", content: [
      { type: "text", text: "What is in this image?" },
      { type: "image_url", image_url: { url } },
    ] }],
  });
  assert.ok(r.choices[0].message.content);
  assert.deepEqual(runsSince(from), [[1, 196 * 1536]]);
});

test("ollama: a chat with base64 images is answered from the image", async () => {
  const client = new Ollama({ host: daemon.base });
  const from = daemon.multimodalRuns().length;
  const r = await client.chat({
    model: "vision-demo",
    options: { num_predict: 4 },
    messages: [{ role: "user", content: "What is in the image?", images: [png().toString("base64")] }],
  });
  assert.ok(r.message.content);
  assert.deepEqual(runsSince(from), [[1, 196 * 1536]]);
});
