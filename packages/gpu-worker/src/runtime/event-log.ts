import fs from "node:fs/promises";

import type { JobEventSink } from "@kiln/shared";

/** One line of the event log: a transition the store accepted, as this worker saw it. */
export interface EventLogLine {
  at: string;
  type: string;
  jobId: string;
  status: string;
  version: number;
  worker: string;
  stage?: number;
  errorCode?: string;
  images?: number;
}

/**
 * `KILN_EVENT_LOG`: every job transition this worker stored (started, succeeded, failed, canceled,
 * expired — not step progress), appended as one JSON line. An audit trail for operators: several
 * workers may append to one file (each line is one O_APPEND write), and `grep succeeded` over it
 * shows whether any job was ever finished twice.
 */
export function eventLogSink(file: string, worker: string): JobEventSink {
  return async ({ type, job, at }) => {
    if (type === "progress") return;
    const line: EventLogLine = {
      at,
      type,
      jobId: job.id,
      status: job.status,
      version: job.version,
      worker,
      stage: job.progress?.stage,
      errorCode: job.error?.code,
      images: job.images.length || undefined,
    };
    await fs.appendFile(file, `${JSON.stringify(line)}\n`);
  };
}

/** Tells every sink; one failing does not keep the others from hearing the event. */
export function fanOutEvents(sinks: JobEventSink[]): JobEventSink | undefined {
  if (sinks.length <= 1) return sinks[0];
  return async (event) => {
    const results = await Promise.allSettled(sinks.map((sink) => sink(event)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  };
}
