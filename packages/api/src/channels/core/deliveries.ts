import { CHAT_QUEUE, isTerminal, type JobEventSink, type Queue } from "@kiln/shared";

/** Chat follow-ups wait on CHAT_QUEUE (the registry's), so progress and results survive a restart of whoever sends them. */
export { CHAT_QUEUE };

/**
 * One chat follow-up to make. It names the job, not the message: the sender re-reads the job and
 * presents its state at that moment, so a delayed or repeated delivery never shows stale progress.
 */
export interface ChatDelivery {
  v: 1;
  kind: "queued" | "progress" | "ended" | "expiring";
  jobId: string;
  /** 1 for the first attempt. */
  attempt: number;
  /** Epoch ms before which it must not be made (a platform's retry_after longer than one queue hop). */
  notBefore?: number;
}

/** A Discord interaction token lives 15 minutes; the last edit must be made before that. */
export const DISCORD_TOKEN_MS = 15 * 60_000;
/** The "still rendering" edit is made this long after the command, while the token still works. */
export const DISCORD_EXPIRY_NOTICE_MS = 13 * 60_000;

const SEND_ATTEMPTS = 3;
const MAX_TRACKED_JOBS = 10_000;

export async function enqueueChatDelivery(
  queue: Queue,
  delivery: Omit<ChatDelivery, "v" | "attempt">,
  delaySeconds = 0,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await queue.send(CHAT_QUEUE, { v: 1, attempt: 1, ...delivery } satisfies ChatDelivery, { delaySeconds });
      return;
    } catch (e) {
      if (attempt >= SEND_ATTEMPTS) throw e;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
}

/**
 * A JobEventSink that queues a chat follow-up for each event of a chat-submitted job: step
 * progress at most every `progressEveryMs` per job (Discord allows about five edits per 5 s per
 * message; Slack's response_url five posts in all), every start and end. Web-standard: workers
 * and the API emit through it.
 */
export function chatEventSink(options: {
  queue: Queue;
  progressEveryMs?: number;
  now?: () => number;
  log?: (level: "warn", obj: Record<string, unknown>, msg: string) => void;
}): JobEventSink {
  const now = options.now ?? Date.now;
  const every = options.progressEveryMs ?? 2_000;
  const last = new Map<string, number>();
  return async (event) => {
    if (!event.job.chat) return;
    const id = event.job.id;
    let kind: ChatDelivery["kind"];
    if (isTerminal(event.job.status)) {
      last.delete(id);
      kind = "ended";
    } else {
      const at = now();
      const previous = last.get(id);
      if (event.type === "progress" && previous !== undefined && at - previous < every) return;
      last.delete(id);
      last.set(id, at);
      if (last.size > MAX_TRACKED_JOBS) last.delete(last.keys().next().value!);
      kind = "progress";
    }
    try {
      await enqueueChatDelivery(options.queue, { kind, jobId: id });
    } catch (e) {
      options.log?.("warn", { err: String(e), jobId: id, event: event.type }, "chat follow-up could not be queued");
    }
  };
}

export function isChatDelivery(value: unknown): value is ChatDelivery {
  const d = value as Partial<ChatDelivery> | null;
  return (
    typeof d === "object" &&
    d !== null &&
    d.v === 1 &&
    typeof d.jobId === "string" &&
    typeof d.attempt === "number" &&
    (d.kind === "queued" || d.kind === "progress" || d.kind === "ended" || d.kind === "expiring")
  );
}
