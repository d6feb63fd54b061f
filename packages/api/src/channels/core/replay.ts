import type { KeyStore } from "@kiln/shared";

/** Signed requests are accepted for 5 minutes; a signature is remembered a little longer than that. */
export const SIGNATURE_WINDOW_SECONDS = 300;

/**
 * True the first time a signature is seen: a captured request replayed within the timestamp
 * window is refused. The counter lives in the KeyStore, so every API instance shares it.
 */
export async function firstSighting(
  keys: KeyStore,
  platform: string,
  signature: string,
  nowMs: number,
): Promise<boolean> {
  const expiresAt = Math.floor(nowMs / 1000) + 2 * SIGNATURE_WINDOW_SECONDS;
  return (await keys.incrementCounter(`chat:seen:${platform}:${signature.slice(0, 128)}`, 1, expiresAt)) === 1;
}

export function hexToBytes(hex: string): Uint8Array<ArrayBuffer> | null {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A timestamp header in seconds within ±5 minutes of now; else why not. */
export function timestampRefusal(header: string | undefined, nowMs: number): string | null {
  if (!header || !/^\d{1,12}$/.test(header)) return "the timestamp header is missing or not a number";
  const skew = Math.abs(nowMs / 1000 - Number(header));
  return skew > SIGNATURE_WINDOW_SECONDS
    ? `the timestamp is ${Math.round(skew)} s away from now (more than 5 minutes)`
    : null;
}
