/**
 * Ids of a render's Server-Sent Events. Events are derived from the job record (polled), not read
 * from a log, so an id encodes how far along the job the client has seen, in an order that only
 * grows: queued (position shrinking) < stage k started < step s of stage k < ended.
 *
 *   q.<position>       position event
 *   r.<stage>.0        stage event
 *   r.<stage>.<step>   progress event (step ≥ 1)
 *   end                the terminal event
 *
 * On reconnect, `Last-Event-ID` says where to resume: only events after it are sent, so nothing
 * is repeated, and the terminal event is always sent unless the client already has it.
 */
export type EventKey = readonly [phase: number, a: number, b: number];

export const END_ID = "end";
export const positionId = (position: number) => `q.${position}`;
export const stageId = (stage: number) => `r.${stage}.0`;
export const progressId = (stage: number, step: number) => `r.${stage}.${step}`;

const MAX = 1_000_000;

/** The key of an id this server issued; undefined for anything else (the stream then starts over). */
export function parseEventId(id: string | undefined | null): EventKey | undefined {
  if (!id) return undefined;
  if (id === END_ID) return [2, 0, 0];
  let m = /^q\.(\d{1,6})$/.exec(id);
  if (m) return [0, MAX - Number(m[1]), 0];
  m = /^r\.(\d{1,3})\.(\d{1,6})$/.exec(id);
  if (m) return [1, Number(m[1]), Number(m[2])];
  return undefined;
}

/** Negative, zero or positive as `a` comes before, with or after `b`; nothing is before `undefined`. */
export function compareKeys(a: EventKey, b: EventKey | undefined): number {
  if (!b) return 1;
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}
