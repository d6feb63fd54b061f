import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { DEFAULT_RENDER_LIMITS } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";

import { buttonId, parseButtonId } from "../../src/channels/core/buttons.js";
import { takeChatAllowance } from "../../src/channels/core/chat-limits.js";
import { chatOptionsToRequest, parseCommandText, requestFromPlan, validate } from "../../src/channels/core/options.js";
import { wordListPolicy } from "../../src/channels/core/policy.js";
import { jobRecord } from "../fixtures.js";

const limits = { ...DEFAULT_RENDER_LIMITS, minSide: 64 };

describe("chat options", () => {
  it("parses /kiln text: prompt first, flags to the next flag, --flag=value", () => {
    const parsed = parseCommandText(
      "a lighthouse at dusk --negative blurry, low quality --mode base --size=512x768 --seed 42 --steps 20",
    );
    assert.deepEqual(parsed, {
      ok: true,
      value: {
        prompt: "a lighthouse at dusk",
        negative: "blurry, low quality",
        mode: "base",
        size: "512x768",
        seed: "42",
        steps: "20",
      },
    });
    assert.match((parseCommandText("cat --colour red") as { message: string }).message, /unknown option --colour/);
    assert.match((parseCommandText("cat --seed") as { message: string }).message, /--seed needs a value/);
    assert.match((parseCommandText("cat --seed 1 2") as { message: string }).message, /takes one value/);
    assert.match((parseCommandText("cat --seed 1 --seed 2") as { message: string }).message, /given twice/);
  });

  it("validates through the API's render schema and names the chat option", () => {
    const ok = chatOptionsToRequest({ prompt: "cat", size: "512x768", seed: "42", steps: 20, mode: "BASE" }, limits);
    assert.ok(ok.ok);
    assert.equal(ok.value.width, 512);
    assert.equal(ok.value.height, 768);
    assert.equal(ok.value.mode, "base");
    assert.equal(ok.value.seed, 42);
    const cases: [object, RegExp][] = [
      [{ prompt: "" }, /^prompt: prompt must not be empty/],
      [{ prompt: "cat", size: "big" }, /size must look like/],
      [{ prompt: "cat", size: "100x64" }, /size \(width\): .*multiple of 8/],
      [{ prompt: "cat", steps: "many" }, /steps must be a whole number/],
      [{ prompt: "cat", steps: 500 }, /^steps: /],
      [{ prompt: "cat", mode: "turbo" }, /^mode: /],
    ];
    for (const [input, message] of cases) {
      const r = chatOptionsToRequest(input, limits);
      assert.equal(r.ok, false);
      assert.match((r as { message: string }).message, message);
    }
  });

  it("rebuilds a finished job's request for re-roll", () => {
    const job = jobRecord({
      prompt: "fox",
      negative_prompt: "blur",
      width: 64,
      height: 128,
      steps: 7,
      mode: "sdedit",
      strength: 0.4,
    });
    const again = validate({ ...requestFromPlan(job.plan), seed: 99 }, limits);
    assert.ok(again.ok);
    assert.deepEqual(
      [
        again.value.prompt,
        again.value.negative_prompt,
        again.value.width,
        again.value.height,
        again.value.steps,
        again.value.mode,
        again.value.strength,
        again.value.seed,
      ],
      ["fox", "blur", 64, 128, 7, "sdedit", 0.4, 99],
    );
  });

  it("button ids round-trip and refuse others", () => {
    assert.deepEqual(parseButtonId(buttonId("reroll", "job_abc123")), { action: "reroll", jobId: "job_abc123" });
    assert.equal(parseButtonId("kiln:delete:job_abc"), null);
    assert.equal(parseButtonId("other:reroll:job_abc"), null);
    assert.ok(buttonId("upscale", `job_${"a".repeat(24)}`).length <= 100);
  });

  it("the default content policy refuses listed words outside NSFW channels only", async () => {
    const policy = wordListPolicy(["Gore"]);
    const base = { platform: "discord" as const, userId: "u", negativePrompt: undefined };
    assert.match(
      (await policy.check({ ...base, prompt: "a GORE scene", channelNsfw: false }))!,
      /not marked NSFW.*"gore"/,
    );
    assert.equal(await policy.check({ ...base, prompt: "a gore scene", channelNsfw: true }), null);
    assert.equal(await policy.check({ ...base, prompt: "a gorey scene", channelNsfw: false }), null);
    assert.equal(await wordListPolicy([]).check({ ...base, prompt: "anything", channelNsfw: false }), null);
  });

  it("per-user and per-guild allowances come from KeyStore token buckets and say when to retry", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-chat-limits-"));
    const ports = openLocalPorts({
      dataDir: dir,
      publicBaseUrl: "http://127.0.0.1:1",
      urlSecret: "s".repeat(16),
      maxReceives: 5,
    });
    try {
      const nowMs = Date.parse("2030-01-01T12:00:00Z");
      const take = (userId: string) =>
        takeChatAllowance(ports.keys, {
          platform: "discord",
          userId,
          guildId: "G",
          userPerHour: 2,
          guildPerHour: 3,
          nowMs,
        });
      assert.equal(await take("a"), null);
      assert.equal(await take("a"), null);
      assert.match((await take("a"))!, /you may start 2 renders an hour\. Try again in 30 min \(at 12:30:00 UTC\)/);
      assert.equal(await take("b"), null);
      assert.match((await take("c"))!, /this server may start 3 renders an hour/);
    } finally {
      await ports.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
