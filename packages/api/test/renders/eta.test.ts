import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { estimateEta, StageTimingBook, stageWork } from "../../src/renders/eta.js";
import { jobRecord } from "../fixtures.js";

/** A finished ensemble job whose stages took `base` and `refine` seconds. */
function finished(id: string, base: number, refine: number, request = {}) {
  return jobRecord(
    { mode: "ensemble", width: 1024, height: 1024, steps: 40, ...request },
    {
      id,
      status: "succeeded",
      stageTimings: [
        {
          stage: 0,
          kind: "base",
          startedAt: "2030-01-01T00:00:00Z",
          finishedAt: "2030-01-01T00:00:10Z",
          seconds: base,
        },
        {
          stage: 1,
          kind: "refine",
          startedAt: "2030-01-01T00:00:10Z",
          finishedAt: "2030-01-01T00:00:12Z",
          seconds: refine,
        },
      ],
    },
  );
}

describe("ETA", () => {
  it("measures stage work in steps × megapixels × images, splitting steps as the plan does", () => {
    const job = jobRecord({ mode: "ensemble", width: 1024, height: 1024, steps: 40, high_noise_frac: 0.8, n: 2 });
    const mp = (1024 * 1024) / 1e6;
    assert.equal(stageWork(job.plan, job.plan.stages[0]!), 32 * mp * 2);
    assert.equal(stageWork(job.plan, job.plan.stages[1]!), 8 * mp * 2);
  });

  it("has no estimate until it has seen a stage of each kind finish", () => {
    const book = new StageTimingBook();
    const queued = jobRecord({ mode: "ensemble", width: 1024, height: 1024, steps: 40 });
    assert.equal(estimateEta(book, { job: queued, now: new Date("2030-01-01T00:00:00Z") }), undefined);
    book.observe(finished("a", 8, 2));
    const eta = estimateEta(book, { job: queued, now: new Date("2030-01-01T00:00:00Z") })!;
    assert.equal(eta.seconds, 10);
    assert.equal(eta.at, "2030-01-01T00:00:10.000Z");
    assert.match(eta.basis, /1 recent base stage\(s\) and 1 recent refine stage\(s\)/);
  });

  it("uses the median pace, scales by size, and shares the queue ahead among live workers", () => {
    const book = new StageTimingBook();
    for (const [i, base] of [8, 8, 80].entries()) book.observe(finished(`j${i}`, base, 2));
    book.observe(finished("j0", 800, 2)); // the same job again is not a new sample
    const half = jobRecord({ mode: "ensemble", width: 1024, height: 512, steps: 40 });
    const eta = estimateEta(book, {
      job: half,
      now: new Date("2030-01-01T00:00:00Z"),
      queuePosition: 4,
      workersForFirstStage: 2,
    })!;
    // own: 4 + 1 s; ahead: 4 jobs × 4 s of base work / 2 workers.
    assert.equal(eta.seconds, 5 + 8);
    assert.match(eta.basis, /4 job\(s\) ahead/);
  });

  it("extrapolates a running stage from its own pace", () => {
    const book = new StageTimingBook();
    book.observe(finished("a", 8, 2));
    const running = jobRecord(
      { mode: "ensemble", width: 1024, height: 1024, steps: 40 },
      {
        status: "running",
        progress: { stage: 0, stageKind: "base", step: 8, steps: 32 },
        stageTimings: [{ stage: 0, kind: "base", startedAt: "2030-01-01T00:00:00Z" }],
      },
    );
    // 8 steps in 4 s → 24 more steps take 12 s, then the refine stage's 2 s.
    const eta = estimateEta(book, { job: running, now: new Date("2030-01-01T00:00:04Z") })!;
    assert.equal(eta.seconds, 14);
    assert.match(eta.basis, /own pace \(8\/32 steps\)/);
    assert.equal(estimateEta(book, { job: { ...running, status: "succeeded" }, now: new Date() }), undefined);
  });
});
