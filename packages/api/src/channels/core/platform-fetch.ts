import { sleep } from "../../http/sleep.js";

/**
 * A platform call to try again later, after `delayMs`: a 429 whose wait is longer than a caller
 * should hold a worker for, or a 5xx / network failure that outlived the quick retries. The chat
 * dispatcher turns it into a delayed queue message, so the wait survives a restart.
 */
export class RetryLater extends Error {
  constructor(
    readonly delayMs: number,
    message: string,
  ) {
    super(message);
    this.name = "RetryLater";
  }
}

/** A refusal that another attempt will not change (4xx other than 429), with the platform's answer. */
export class PlatformRefused extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    message: string,
  ) {
    super(message);
    this.name = "PlatformRefused";
  }
}

export interface PlatformFetchOptions {
  fetch?: typeof fetch;
  /** Quick retries in place before handing the wait to the queue. */
  attempts?: number;
  /** 429 waits up to this long are slept through in place; longer ones become RetryLater. */
  maxInlineWaitMs?: number;
  /** First backoff after a 5xx; doubles per attempt. */
  backoffMs?: number;
  timeoutMs?: number;
}

/** Seconds to wait from a 429: Discord's JSON `retry_after` (float seconds), else the Retry-After header. */
export function retryAfterMs(response: Response, body: string): number {
  try {
    const parsed = JSON.parse(body) as { retry_after?: unknown };
    if (typeof parsed.retry_after === "number" && parsed.retry_after >= 0) return Math.ceil(parsed.retry_after * 1000);
  } catch {
    // Not JSON: fall through to the header.
  }
  const header = response.headers.get("retry-after");
  const seconds = header === null ? NaN : Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? Math.ceil(seconds * 1000) : 1000;
}

/**
 * One HTTP exchange with a chat platform, retried the way both platforms ask: a 429 waits what
 * the platform says (in place when short), a 5xx or network failure backs off. `build` makes a
 * fresh Request each attempt (bodies are single-use). Resolves with a 2xx response whose body is
 * read into `text`; throws RetryLater or PlatformRefused otherwise.
 */
export async function platformFetch(
  build: () => Request,
  options: PlatformFetchOptions = {},
): Promise<{ response: Response; text: string }> {
  const doFetch = options.fetch ?? fetch;
  const attempts = options.attempts ?? 3;
  const maxInline = options.maxInlineWaitMs ?? 5_000;
  let backoff = options.backoffMs ?? 500;
  let lastWait = backoff;
  let lastReason = "";
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const request = build();
    let response: Response;
    let text: string;
    try {
      response = await doFetch(request, { signal: AbortSignal.timeout(options.timeoutMs ?? 15_000) });
      text = await response.text();
    } catch (e) {
      lastReason = `${request.method} ${new URL(request.url).pathname} failed: ${String(e)}`;
      lastWait = backoff;
      if (attempt < attempts) await sleep(backoff);
      backoff *= 2;
      continue;
    }
    if (response.ok) return { response, text };
    const where = `${request.method} ${new URL(request.url).pathname}`;
    if (response.status === 429) {
      const wait = retryAfterMs(response, text);
      lastReason = `${where} was rate limited (retry after ${wait} ms)`;
      lastWait = wait;
      if (wait > maxInline || attempt === attempts) throw new RetryLater(wait, lastReason);
      await sleep(wait);
      continue;
    }
    if (response.status >= 500) {
      lastReason = `${where} answered ${response.status}`;
      lastWait = backoff;
      if (attempt < attempts) await sleep(backoff);
      backoff *= 2;
      continue;
    }
    throw new PlatformRefused(
      response.status,
      text.slice(0, 500),
      `${where} answered ${response.status}: ${text.slice(0, 200)}`,
    );
  }
  throw new RetryLater(lastWait, lastReason);
}
