import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { expandManifest, renderKey } from "../../src/batches/expand.js";
import { ManifestError, parseManifest } from "../../src/batches/manifest.js";
import { nextFires } from "../../src/batches/schedule.js";

const LIMITS = { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 };

function issuesOf(fn: () => unknown): ManifestError["issues"] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ManifestError, `expected a ManifestError, got ${String(e)}`);
    assert.equal(e.status, 400);
    assert.equal(e.code, "manifest_invalid");
    return e.issues;
  }
  assert.fail("the manifest was accepted");
}

async function asyncIssuesOf(fn: () => Promise<unknown>): Promise<ManifestError["issues"]> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof ManifestError, `expected a ManifestError, got ${String(e)}`);
    return e.issues;
  }
  assert.fail("the manifest was accepted");
}

describe("batch manifests: validation errors point at the line and column (YAML) or the JSON path", () => {
  it("names the line and column of a bad YAML value and of an unknown field, and what is allowed", () => {
    const yaml = [
      "id: catalogue",
      "prompts:",
      "  - a red chair",
      "sizes: [512x512, big]",
      "expand: diagonal",
      "colour: red",
      "",
    ].join("\n");
    const issues = issuesOf(() => parseManifest(yaml, "yaml"));
    const size = issues.find((i) => i.field === "$.sizes[1]");
    assert.ok(size, JSON.stringify(issues));
    assert.deepEqual([size.line, size.column], [4, 18]);
    assert.match(size.message, /WIDTHxHEIGHT/);
    const expand = issues.find((i) => i.field === "$.expand");
    assert.deepEqual([expand?.line, expand?.column], [5, 9]);
    assert.match(expand!.message, /cartesian|zip/);
    const unknown = issues.find((i) => i.field === "$.colour");
    assert.equal(unknown?.line, 6);
  });

  it("reports YAML syntax errors with their position", () => {
    const issues = issuesOf(() => parseManifest("id: x\nprompts: [a, b\n", "yaml"));
    assert.equal(issues[0]!.field, "$");
    assert.ok(issues[0]!.line! >= 2, JSON.stringify(issues));
  });

  it("reports JSON errors as JSON paths", () => {
    const issues = issuesOf(() =>
      parseManifest(JSON.stringify({ id: "Bad Id", prompts: ["a"], seeds: [1, -2], caps: { max_images: 0 } }), "json"),
    );
    const fields = issues.map((i) => i.field).sort();
    assert.deepEqual(fields, ["$.caps.max_images", "$.id", "$.seeds[1]"]);
    assert.ok(issues.every((i) => i.line === undefined));
  });

  it("checks render fields after expansion and points at the manifest field they came from", async () => {
    const yaml = [
      "id: catalogue",
      "defaults:",
      "  steps: 20",
      "  guidance_scale: 99",
      "prompts:",
      "  - a red chair",
      "  - prompt: a blue chair",
      "    steps: 900",
      "sizes: [512x512, 500x512]",
      "",
    ].join("\n");
    const { manifest, locate } = parseManifest(yaml, "yaml");
    const issues = await asyncIssuesOf(() => expandManifest(manifest, { ownerKeyId: "key_a", limits: LIMITS, locate }));
    const byField = Object.fromEntries(issues.map((i) => [i.field, i]));
    assert.deepEqual(
      [byField["$.defaults.guidance_scale"]?.line, byField["$.defaults.guidance_scale"]?.column],
      [4, 19],
    );
    assert.equal(byField["$.prompts[1].steps"]?.line, 8);
    assert.equal(byField["$.sizes[1]"]?.line, 9);
    assert.match(byField["$.sizes[1]"]!.message, /multiple of 8/);
  });
});

describe("batch manifests: expansion", () => {
  const base = { id: "m", defaults: { steps: 4 }, expand: "cartesian" as const, priority: 5 };

  it("cartesian: prompts × seeds × sizes × modes", async () => {
    const items = await expandManifest(
      {
        ...base,
        prompts: ["a", { prompt: "b", steps: 6 }, "c"],
        seeds: [1, 2],
        sizes: ["256x256", "512x256"],
        modes: ["base", "ensemble"],
      },
      { ownerKeyId: "key_a", limits: LIMITS },
    );
    assert.equal(items.length, 3 * 2 * 2 * 2);
    assert.equal(new Set(items.map((i) => i.key)).size, 24);
    assert.equal(items.find((i) => i.prompt === "b")!.request.steps, 6);
    assert.equal(items.find((i) => i.prompt === "a")!.request.steps, 4);
    assert.deepEqual([...new Set(items.map((i) => `${i.width}x${i.height}`))].sort(), ["256x256", "512x256"]);
  });

  it("zip: the i-th of each list, lists of one applying to all; unequal lists are refused", async () => {
    const items = await expandManifest(
      { ...base, expand: "zip", prompts: ["a", "b", "c"], seeds: [7, 8, 9], sizes: ["256x256"] },
      { ownerKeyId: "key_a", limits: LIMITS },
    );
    assert.deepEqual(
      items.map((i) => [i.prompt, i.seed, i.width]),
      [
        ["a", 7, 256],
        ["b", 8, 256],
        ["c", 9, 256],
      ],
    );
    const issues = await asyncIssuesOf(() =>
      expandManifest(
        { ...base, expand: "zip", prompts: ["a", "b", "c"], seeds: [1, 2] },
        { ownerKeyId: "k", limits: LIMITS },
      ),
    );
    assert.equal(issues[0]!.field, "$.seeds");
    assert.match(issues[0]!.message, /equal length/);
  });

  it("render ids depend on the canonical parameters, the manifest and the key — not on how they were written", async () => {
    const [a] = await expandManifest(
      { ...base, prompts: ["a"], seeds: [1], defaults: { steps: 4, mode: "base" } },
      { ownerKeyId: "k" },
    );
    const [b] = await expandManifest(
      { ...base, prompts: [{ prompt: "a", mode: "base", steps: 4 }], seeds: [1], defaults: {} },
      { ownerKeyId: "k" },
    );
    assert.equal(a!.key, b!.key);
    assert.notEqual(a!.key, await renderKey("k2", "m", a!.request));
    assert.notEqual(a!.key, await renderKey("k", "m2", a!.request));
    const [c] = await expandManifest(
      { ...base, prompts: ["a"], seeds: [2], defaults: { steps: 4, mode: "base" } },
      { ownerKeyId: "k" },
    );
    assert.notEqual(a!.key, c!.key);
  });
});

describe("batch schedules", () => {
  it("fires at 02:00 Berlin time on both sides of the change to summer time", () => {
    // Summer time starts on 2026-03-29: 02:00 local is UTC+1 before and UTC+2 after.
    const fires = nextFires({ cron: "0 2 * * *", timezone: "Europe/Berlin" }, new Date("2026-03-27T12:00:00Z"), 4);
    assert.deepEqual(
      fires.map((d) => d.toISOString()),
      // On the 29th 02:00 does not exist in Berlin; croner runs the job at the first valid moment (03:00 CEST = 01:00 UTC).
      ["2026-03-28T01:00:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-30T00:00:00.000Z", "2026-03-31T00:00:00.000Z"],
    );
  });

  it("fires once on the night summer time ends (02:30 happens twice in Berlin)", () => {
    const fires = nextFires({ cron: "30 2 * * *", timezone: "Europe/Berlin" }, new Date("2026-10-24T12:00:00Z"), 3);
    assert.equal(new Set(fires.map((d) => d.toISOString().slice(0, 10))).size, 3);
    assert.equal(fires[0]!.toISOString(), "2026-10-25T00:30:00.000Z");
    assert.equal(fires[1]!.toISOString(), "2026-10-26T01:30:00.000Z");
  });
});
