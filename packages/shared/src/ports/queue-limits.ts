import { KilnError } from "../errors.js";

// SQS's bounds, enforced by both families so a message that works on one family works on the other.
export const MAX_MESSAGE_BYTES = 256 * 1024;
export const MAX_DELAY_SECONDS = 900;
export const MAX_VISIBILITY_SECONDS = 43_200;
/** SQS caps one long poll at 20 s. */
export const MAX_WAIT_SECONDS = 20;
export const MAX_BATCH = 10;

export function checkSeconds(name: string, value: number, max: number): void {
  if (!Number.isFinite(value) || value < 0 || value > max) {
    throw new KilnError("queue_argument_invalid", `${name} must be between 0 and ${max} seconds (got ${value}).`);
  }
}

export function checkCount(max: number): number {
  if (!Number.isInteger(max) || max < 1) {
    throw new KilnError("queue_argument_invalid", `max must be a whole number of at least 1 (got ${max}).`);
  }
  return max;
}
