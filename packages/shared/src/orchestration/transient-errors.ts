import { isKilnError } from "../errors.js";

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
]);
const FILE_CODES = new Set(["EBUSY", "EAGAIN", "EMFILE", "ENFILE"]);
const AWS_TRANSIENT_NAMES = new Set([
  "ThrottlingException",
  "Throttling",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "RequestThrottled",
  "SlowDown",
  "ServiceUnavailable",
  "InternalError",
  "InternalServerError",
  "InternalFailure",
  "RequestTimeout",
  "RequestTimeoutException",
  "TimeoutError",
  "TransactionInProgressException",
]);

/**
 * Whether an error from a port is worth retrying as is: the store or queue was unreachable, busy
 * or throttling, not refusing the request itself. SQLite's BUSY/LOCKED (another process holds the
 * write lock past the busy timeout), socket errors, AWS throttling and 5xx answers, and KilnErrors
 * marked retryable.
 */
export function isTransientError(e: unknown): boolean {
  if (isKilnError(e)) return e.retryable;
  if (typeof e !== "object" || e === null) return false;
  const err = e as {
    code?: unknown;
    name?: unknown;
    message?: unknown;
    $retryable?: unknown;
    $metadata?: { httpStatusCode?: number };
    cause?: unknown;
  };
  const code = typeof err.code === "string" ? err.code : "";
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return true;
  if (NETWORK_CODES.has(code) || FILE_CODES.has(code)) return true;
  if (err.$retryable) return true;
  const status = err.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  if (typeof err.name === "string" && AWS_TRANSIENT_NAMES.has(err.name)) return true;
  if (typeof err.message === "string" && /socket hang up|other side closed|ECONNREFUSED|ECONNRESET/.test(err.message))
    return true;
  return err.cause !== undefined && err.cause !== e && isTransientError(err.cause);
}

export interface RetryOptions {
  /** Give up (rethrow the last error) once this much time has passed since the first attempt. */
  maxMs?: number;
  /** First wait; doubles per attempt up to `maxDelayMs`, with ±25 % jitter. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Stop retrying (rethrow) once aborted. */
  signal?: AbortSignal;
  onRetry?(error: unknown, attempt: number, delayMs: number): void;
}

/** Runs `op`, retrying transient failures with exponential backoff; other errors are thrown at once. */
export async function retryTransient<T>(op: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const started = Date.now();
  const maxMs = options.maxMs ?? 30_000;
  let delay = options.initialDelayMs ?? 200;
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (e) {
      const wait = Math.round(delay * (0.75 + Math.random() * 0.5));
      if (!isTransientError(e) || options.signal?.aborted || Date.now() - started + wait > maxMs) throw e;
      options.onRetry?.(e, attempt, wait);
      await new Promise((resolve) => setTimeout(resolve, wait));
      delay = Math.min(delay * 2, options.maxDelayMs ?? 5_000);
    }
  }
}
