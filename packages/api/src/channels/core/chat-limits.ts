import type { KeyStore } from "@kiln/shared";

/**
 * Per chat user and per guild/workspace limits, on top of the chat key's own quotas. Token buckets
 * in the KeyStore, the same store (and so the same atomicity across API instances) as the key's
 * request rate in middleware/rate-limit.ts. Returns a sentence for the user when over a limit.
 */
export async function takeChatAllowance(
  keys: KeyStore,
  input: {
    platform: string;
    userId: string;
    guildId?: string;
    userPerHour: number;
    guildPerHour: number;
    nowMs: number;
  },
): Promise<string | null> {
  const buckets: { name: string; perHour: number; who: string }[] = [
    { name: `chat:${input.platform}:user:${input.userId}`, perHour: input.userPerHour, who: "you" },
  ];
  if (input.guildId)
    buckets.push({
      name: `chat:${input.platform}:guild:${input.guildId}`,
      perHour: input.guildPerHour,
      who: "this server",
    });
  for (const bucket of buckets) {
    if (!(bucket.perHour > 0)) continue;
    const taken = await keys.takeToken(bucket.name, bucket.perHour / 3600, bucket.perHour, input.nowMs);
    if (!taken.allowed) {
      const seconds = Math.max(1, Math.ceil(taken.retryAfterMs / 1000));
      const when = new Date(input.nowMs + seconds * 1000);
      return `Render limit reached: ${bucket.who} may start ${bucket.perHour} render${bucket.perHour === 1 ? "" : "s"} an hour. Try again in ${formatWait(seconds)} (at ${when.toISOString().slice(11, 19)} UTC).`;
    }
  }
  return null;
}

export function formatWait(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.ceil(seconds / 60)} min`;
  return `${Math.round(seconds / 360) / 10} h`;
}
