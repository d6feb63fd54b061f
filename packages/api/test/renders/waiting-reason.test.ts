import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { waitingReason, waitingStage } from "../../src/renders/waiting-reason.js";
import { fakeRegistry, jobRecord } from "../fixtures.js";

const NOW = Date.parse("2030-01-01T01:00:00Z");
const beat = (workerId: string, stages: ("base" | "refine")[], agoSeconds: number, busy = 0) => ({
  workerId,
  stages,
  lastPollAt: NOW - agoSeconds * 1000,
  busy,
});

describe("waiting reason", () => {
  it("is unknown without a worker registry", async () => {
    const { reason } = await waitingReason(undefined, "base", 3, NOW);
    assert.equal(reason.code, "unknown");
    assert.match(reason.message, /3 job\(s\) are ahead/);
  });

  it("says no capacity when no worker for the stage has polled at all, even if others have", async () => {
    const { reason } = await waitingReason(fakeRegistry([beat("w-base", ["base"], 1)]), "refine", 0, NOW);
    assert.equal(reason.code, "no_workers");
    assert.match(reason.message, /No worker for the refine stage has polled in the last 60 minutes/);
  });

  it("says how long workers for the stage have been silent, naming the last one seen", async () => {
    const { reason } = await waitingReason(
      fakeRegistry([beat("w1", ["base"], 300), beat("w2", ["base", "refine"], 95)]),
      "base",
      2,
      NOW,
    );
    assert.equal(reason.code, "workers_silent");
    assert.match(reason.message, /has polled in 95 s \(last seen: w2\)/);
  });

  it("keeps a busy worker alive while it beats, and drops one killed mid-stage within a minute", async () => {
    const { reason, liveWorkers } = await waitingReason(fakeRegistry([beat("w1", ["base"], 30, 1)]), "base", 0, NOW);
    assert.equal(reason.code, "workers_busy");
    assert.equal(liveWorkers, 1);
    const killed = await waitingReason(fakeRegistry([beat("w1", ["base"], 300, 1)]), "base", 0, NOW);
    assert.equal(killed.liveWorkers, 0, "a busy worker beats every 10 s; five minutes of silence is a dead one");
  });

  it("tells busy workers (jobs ahead) from next in line", async () => {
    const registry = fakeRegistry([beat("w1", ["base"], 2), beat("w2", ["base"], 4, 1)]);
    const busy = await waitingReason(registry, "base", 4, NOW);
    assert.equal(busy.reason.code, "workers_busy");
    assert.match(busy.reason.message, /^4 job\(s\) ahead; 2 worker\(s\) for the base stage are polling, 1 busy/);
    const next = await waitingReason(registry, "base", 0, NOW);
    assert.equal(next.reason.code, "next_in_line");
    assert.match(next.reason.message, /polled 2 s ago/);
  });

  it("knows which stage a job waits for: stage 0 while queued, the next stage after a hand-over, none while a stage runs", () => {
    assert.deepEqual(waitingStage(jobRecord({ mode: "ensemble" })), { index: 0, kind: "base" });
    const handedOver = jobRecord(
      { mode: "ensemble" },
      {
        status: "running",
        progress: { stage: 0, stageKind: "base", step: 24, steps: 24 },
        stageTimings: [
          { stage: 0, kind: "base", startedAt: "2030-01-01T00:00:01Z", finishedAt: "2030-01-01T00:00:03Z", seconds: 2 },
        ],
      },
    );
    assert.deepEqual(waitingStage(handedOver), { index: 1, kind: "refine" });
    const running = {
      ...handedOver,
      stageTimings: [{ stage: 0, kind: "base" as const, startedAt: "2030-01-01T00:00:01Z" }],
    };
    assert.equal(waitingStage(running), undefined);
    assert.equal(waitingStage({ ...handedOver, status: "succeeded" }), undefined);
  });
});
