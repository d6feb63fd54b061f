/**
 * Kiln's one error type. Every failure a user can see carries a stable machine-readable `code`
 * and a sentence that says what was wrong and what to do. HTTP adapters turn it into
 * `application/problem+json` (RFC 9457) with `status`.
 */
export class KilnError extends Error {
  readonly code: string;
  readonly status: number;
  /** Extra members for the problem document (e.g. `errors` per field). */
  readonly details?: Record<string, unknown>;
  /** Whether retrying the same work may succeed (a transient fault) or not (bad input, bad model). */
  readonly retryable: boolean;

  constructor(
    code: string,
    message: string,
    options: { status?: number; details?: Record<string, unknown>; retryable?: boolean; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "KilnError";
    this.code = code;
    this.status = options.status ?? 500;
    this.details = options.details;
    this.retryable = options.retryable ?? false;
  }
}

export const isKilnError = (e: unknown): e is KilnError => e instanceof KilnError;

/** A short description of any thrown value, for logs and job errors. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
