import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { DEFAULT_SHAPE, GPU_PROFILES, renderSeconds, stageSeconds, stageSteps } from "@kiln/gpu-worker";

import { makePolicy } from "../../src/simulate/policies.js";
import { simulate } from "../../src/simulate/simulator.js";
import { diurnalRate, fileTrace, makeTrace } from "../../src/simulate/traces.js";

const a10 = GPU_PROFILES.a10!;
const fixed = (n: number) => makePolicy("fixed", { targetBacklog: 4, maxInstances: n, idleSeconds: 600 });
const arrivals = (...ts: number[]) => ts.map((t) => ({ t, shape: DEFAULT_SHAPE }));
const base = { profile: a10, maxBatch: 1, spotShare: 0, seed: 1, hours: 1 };

describe("capacity simulator", () => {
  it("splits steps as the stage planner does", () => {
    assert.deepEqual(stageSteps({ ...DEFAULT_SHAPE, steps: 30 }), [24, 6]);
    assert.deepEqual(stageSteps({ ...DEFAULT_SHAPE, mode: "sdedit", steps: 30 }), [30, 9]);
    assert.deepEqual(stageSteps({ ...DEFAULT_SHAPE, mode: "base", steps: 30 }), [30]);
  });

  it("reproduces the published A10 figure for 30 steps at 1024² base + refiner", () => {
    assert.ok(Math.abs(renderSeconds(a10, DEFAULT_SHAPE, 1, false) - 8.16) < 1e-9);
  });

  it("serves a queue on one GPU in order: time to image is 1, 2 and 3 renders long", () => {
    const one = renderSeconds(a10, DEFAULT_SHAPE, 1, false) + 2 * a10.stageOverheadSeconds;
    const r = simulate(arrivals(1000, 1000, 1000), { ...base, policy: fixed(1) });
    assert.equal(r.jobs, 3);
    assert.ok(Math.abs(r.p50_s - 2 * one) < 0.002, `p50 ${r.p50_s} vs ${2 * one}`);
    assert.ok(Math.abs(r.max_s - 3 * one) < 0.002);
    assert.ok(Math.abs(r.busy_gpu_hours - (3 * renderSeconds(a10, DEFAULT_SHAPE, 1, false)) / 3600) < 0.001);
  });

  it("pipelined: keeps the GPU on stages back to back, a refine stage after the first stage claimed ahead", () => {
    const [b, r, c] = [
      stageSeconds(a10, DEFAULT_SHAPE, 0),
      stageSeconds(a10, DEFAULT_SHAPE, 1),
      a10.stageOverheadSeconds,
    ];
    const done: number[] = [];
    const o = { ...base, policy: fixed(1), pipelined: true, onDone: (_a: unknown, t: number) => void done.push(t) };
    const three = simulate(arrivals(1000, 1000, 1000), o);
    // A's base stage; B's claimed ahead takes the GPU next, then C's (claimed while A's hand-over ran); then the
    // refine stages in order. Each render's CPU work follows its last GPU call; the GPU never waits for it.
    const expected = [3 * b + r + c, 3 * b + 2 * r + c, 3 * b + 3 * r + c].map((x) => 1000 + x);
    for (const [i, t] of done.entries()) assert.ok(Math.abs(t - expected[i]!) < 1e-6, `${done} vs ${expected}`);
    assert.ok(Math.abs(three.busy_gpu_hours * 3600 - 3 * (b + r)) < 2);
    // Alone, a render's time is its GPU and CPU work, as unpipelined.
    const alone = simulate(arrivals(1000), o);
    assert.ok(Math.abs(alone.p50_s - renderSeconds(a10, DEFAULT_SHAPE)) < 0.002);
  });

  it("batches the stages a worker claims together into one UNet batch at the profile's marginal cost", () => {
    const [b, r, c] = [
      stageSeconds(a10, DEFAULT_SHAPE, 0),
      stageSeconds(a10, DEFAULT_SHAPE, 1),
      a10.stageOverheadSeconds,
    ];
    const [b3, r3] = [stageSeconds(a10, DEFAULT_SHAPE, 0, 3), stageSeconds(a10, DEFAULT_SHAPE, 1, 3)];
    // A's base stage from 999; its worker's next poll, at 1000.25, claims the three arrived since as one batch.
    // The batch's base stage runs next, then A's refine stage, then the batch's three refine stages together.
    const done: number[] = [];
    simulate(arrivals(999, 1000.1, 1000.1, 1000.1), {
      ...base,
      policy: fixed(1),
      maxBatch: 3,
      pipelined: true,
      onDone: (_a, t) => void done.push(t),
    });
    const expected = [999 + b + b3 + r + c, ...[0, 1, 2].map(() => 999 + b + b3 + r + r3 + c)];
    for (const [i, t] of done.entries()) assert.ok(Math.abs(t - expected[i]!) < 1e-6, `${done} vs ${expected}`);
    assert.ok(b3 + r3 < 3 * (b + r));
  });

  it("scales from zero on the first render and back to zero once idle", () => {
    const policy = makePolicy("target-backlog", { targetBacklog: 1, maxInstances: 5, idleSeconds: 600 });
    const r = simulate(arrivals(30), { ...base, policy });
    assert.equal(r.jobs, 1);
    assert.equal(r.max_instances, 1);
    assert.equal(r.scale_events, 2, "one scale-out, one scale-in");
    // Launched at the first evaluation after the arrival, billed through boot, the render and the idle time.
    assert.ok(r.p50_s > a10.bootSeconds + a10.modelLoadSeconds);
    assert.ok(r.gpu_hours * 3600 >= a10.bootSeconds + a10.modelLoadSeconds + 600);
  });

  it("serves an interactive render before a waiting batch of 200", () => {
    const trace = [
      ...Array.from({ length: 200 }, () => ({ t: 1000, shape: DEFAULT_SHAPE, batch: true })),
      { t: 1001, shape: DEFAULT_SHAPE },
    ];
    const r = simulate(trace, { ...base, policy: fixed(1), pipelined: true, samples: 10 });
    const one = renderSeconds(a10, DEFAULT_SHAPE, 1, false);
    // The interactive render waits for at most the render already on the GPU.
    assert.equal(r.jobs, 201);
    assert.ok(r.samples.length > 0);
    const sorted = [r.p50_s, r.max_s];
    assert.ok(sorted[1]! > 150 * one);
    const interactiveOnly = simulate([trace[200]!], { ...base, policy: fixed(1), pipelined: true });
    assert.ok(interactiveOnly.max_s <= renderSeconds(a10, DEFAULT_SHAPE) + 0.002);
  });

  it("is deterministic per seed and keeps a diurnal trace's mean rate", () => {
    const run = () =>
      simulate(makeTrace("poisson", { ratePerMinute: 6, hours: 2, seed: 3 }), {
        ...base,
        hours: 2,
        policy: makePolicy("step", { targetBacklog: 2, maxInstances: 10, idleSeconds: 300 }),
      });
    assert.deepEqual(run(), run());
    let integral = 0;
    for (let t = 0; t < 86_400; t += 60) integral += diurnalRate(10, t) * 60;
    assert.ok(Math.abs(integral / 1440 - 10) < 0.01, `mean ${integral / 1440}/min`);
    const count = [...makeTrace("diurnal", { ratePerMinute: 10, hours: 240, seed: 1 })].length;
    assert.ok(Math.abs(count / (240 * 60) - 10) < 0.3, `${count / (240 * 60)}/min`);
  });

  it("has an idle worker take interactive work at once, and a batch render at its next poll", () => {
    const gpu = renderSeconds(a10, DEFAULT_SHAPE, 1, false);
    // The unpipelined worker with no CPU work, so that times are whole renders of GPU time.
    const o = { ...base, profile: { ...a10, stageOverheadSeconds: 0 }, policy: fixed(1), idlePollSeconds: 1 };
    const batch = (...ts: number[]) => ts.map((t) => ({ t, shape: DEFAULT_SHAPE, batch: true }));
    // Idle since it came up at t = 0: its long poll on the interactive queue ends at 1, 2, … s, when it
    // checks the batch queues too.
    assert.ok(Math.abs(simulate(arrivals(1000.3), o).p50_s - gpu) < 1e-6);
    assert.ok(Math.abs(simulate(batch(1000.3), o).p50_s - (0.7 + gpu)) < 1e-6);
    // A worker that just finished takes the next render at once; its poll phase restarts when it goes idle.
    const done: number[] = [];
    simulate(batch(1000, 1001, 1000 + 2 * gpu + 0.5), { ...o, onDone: (_a, t) => done.push(t) });
    assert.ok(Math.abs(done[0]! - (1000 + gpu)) < 1e-6);
    assert.ok(Math.abs(done[1]! - (1000 + 2 * gpu)) < 1e-6, "queued behind the first: no poll wait");
    assert.ok(Math.abs(done[2]! - (1000 + 3 * gpu + 1)) < 1e-6, "idle since the second: next poll 1 s after");
    // Two idle workers: the one whose poll comes first takes it.
    const two = simulate(batch(1000, 1000 + gpu + 0.2, 1000 + gpu + 0.9), {
      ...o,
      policy: fixed(2),
      onDone: (_a, t) => done.push(t),
    });
    assert.equal(two.jobs, 3);
    assert.ok(Math.abs(done[5]! - (1000 + gpu + 1 + gpu)) < 1e-6, `${done.slice(3)}`);
  });

  it("kiln simulate lays a --profile file over --gpu and names a bad field", async () => {
    const { run } = await import("../../src/commands/simulate.js");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-sim-"));
    const trace = path.join(dir, "one.csv");
    fs.writeFileSync(trace, "1\n");
    const profile = path.join(dir, "p.json");
    const common = ["--trace", trace, "--policy", "fixed", "--max", "1", "--hours", "0.1", "--poll", "0"];
    const lines: string[] = [];
    const [log, error] = [console.log, console.error];
    console.log = console.error = (x: string) => void lines.push(x);
    try {
      const fields = { stepSeconds: 0.01, vaeSeconds: 0, bootSeconds: 0, modelLoadSeconds: 0, stageOverheadSeconds: 0 };
      fs.writeFileSync(profile, JSON.stringify(fields));
      await run([...common, "--profile", profile, "--json"]);
      assert.equal((JSON.parse(lines.pop()!) as { p50_s: number }).p50_s, 0.3, "30 steps × 10 ms");
      fs.writeFileSync(profile, '{"stepSecs": 1}');
      await run([...common, "--profile", profile, "--json"]);
      assert.equal(process.exitCode, 2);
      assert.match(lines.pop()!, /--profile .*p\.json: "stepSecs" must be one of name, stepSeconds/);
    } finally {
      [console.log, console.error] = [log, error];
      process.exitCode = undefined;
      fs.rmSync(dir, { recursive: true });
    }
  });

  it("reads arrival files and names the line of a bad one", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-sim-"));
    const good = path.join(dir, "good.csv");
    fs.writeFileSync(good, '# t,size,mode\n5,512x512,base\n1\n{"t":3,"n":2}\n');
    const trace = [...fileTrace(good)];
    assert.deepEqual(
      trace.map((a) => [a.t, a.shape.width, a.shape.mode, a.shape.n]),
      [
        [1, 1024, "ensemble", 1],
        [3, 1024, "ensemble", 2],
        [5, 512, "base", 1],
      ],
    );
    const bad = path.join(dir, "bad.csv");
    fs.writeFileSync(bad, "1\n2,12x\n");
    assert.throws(() => fileTrace(bad), /bad\.csv:2: size must be WIDTHxHEIGHT/);
    fs.rmSync(dir, { recursive: true });
  });
});
