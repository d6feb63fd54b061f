/**
 * The `Prefer` request header (RFC 7240): comma-separated preferences, each `token[=value]` with
 * optional `;parameters` (ignored here). Several headers are joined with commas by the runtime.
 * Returns lower-cased names → values (`""` for a bare token); the first occurrence of a name wins.
 */
export function parsePrefer(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(",")) {
    const [pref] = part.split(";");
    const eq = pref!.indexOf("=");
    const name = (eq < 0 ? pref! : pref!.slice(0, eq)).trim().toLowerCase();
    if (!name || out.has(name)) continue;
    const value =
      eq < 0
        ? ""
        : pref!
            .slice(eq + 1)
            .trim()
            .replace(/^"(.*)"$/, "$1");
    out.set(name, value);
  }
  return out;
}

export const MAX_PREFER_WAIT_SECONDS = 60;

/**
 * `wait=N` from a Prefer header: undefined without one, a whole number of seconds from 0 to 60, or
 * an error sentence for anything else (Kiln says so rather than silently ignoring a typo).
 */
export function preferWait(header: string | undefined): { seconds?: number; error?: string } {
  const wait = parsePrefer(header).get("wait");
  if (wait === undefined) return {};
  if (!/^\d{1,6}$/.test(wait)) return { error: `wait must be a whole number of seconds (got "${wait}")` };
  const seconds = Number(wait);
  if (seconds > MAX_PREFER_WAIT_SECONDS)
    return {
      error: `wait must be at most ${MAX_PREFER_WAIT_SECONDS} seconds (got ${seconds}); poll GET /v1/renders/{id} or stream its events for longer jobs`,
    };
  return { seconds };
}
