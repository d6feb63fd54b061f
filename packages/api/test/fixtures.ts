import {
  type JobRecord,
  planRender,
  type RenderRequestInput,
  renderRequestSchema,
  type WorkerBeat,
  type WorkerRegistry,
} from "@kiln/shared";

/** A job record as the API would store it, with overrides. */
export function jobRecord(request: Partial<RenderRequestInput> = {}, patch: Partial<JobRecord> = {}): JobRecord {
  const plan = planRender(
    renderRequestSchema({ minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 }).parse({
      prompt: "a test",
      ...request,
    }),
    7,
  );
  const created = "2030-01-01T00:00:00.000Z";
  return {
    id: "job_test",
    ownerKeyId: "key_test",
    status: "queued",
    version: 1,
    createdAt: created,
    updatedAt: created,
    plan,
    images: [],
    stageTimings: [],
    ...patch,
  };
}

/** A WorkerRegistry that answers with the given beats (filtered by `since`, as the port promises). */
export function fakeRegistry(beats: WorkerBeat[]): WorkerRegistry & { beats: WorkerBeat[] } {
  return {
    beats,
    async heartbeat(beat) {
      this.beats = [...this.beats.filter((b) => b.workerId !== beat.workerId), beat];
    },
    async list(since) {
      return this.beats.filter((b) => b.lastPollAt >= since);
    },
  };
}
