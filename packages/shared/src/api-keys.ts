import { KilnError } from "./errors.js";
import type { KeyLimits, KeyRecord, KeyScope, KeyStore } from "./ports/key-store.js";

/**
 * API keys: `kiln_<prefix>_<secret>`. The prefix is public and indexes the record; the whole key is
 * stored only as a SHA-256 hash and compared in constant time. Web Crypto only, so the API core can
 * run on any runtime.
 */
const KEY_PATTERN = /^kiln_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$/;

const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const base64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");

export async function sha256Hex(text: string): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))));
}

/** Compares two strings in time that depends only on their length. */
export function timingSafeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export function randomId(bytes = 16): string {
  return toHex(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes. */
export function generateWebhookSecret(): string {
  return `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

/** Throws `limits_invalid` naming the first bad field; the stores trust what passes. */
export function validateKeyLimits(limits: KeyLimits): void {
  const checks: [keyof KeyLimits, (v: number) => boolean, string][] = [
    ["requestsPerSecond", (v) => Number.isFinite(v) && v >= 0 && v <= 100_000, "a number from 0 (no limit) to 100000"],
    ["burst", (v) => Number.isInteger(v) && v >= 1 && v <= 1_000_000, "a whole number from 1 to 1000000"],
    [
      "concurrentJobs",
      (v) => Number.isInteger(v) && v >= 0 && v <= 1_000_000,
      "a whole number from 0 (no limit) to 1000000",
    ],
    [
      "imagesPerDay",
      (v) => Number.isInteger(v) && v >= 0 && v <= 1_000_000_000,
      "a whole number from 0 (no limit) to 1000000000",
    ],
  ];
  for (const [field, ok, rule] of checks) {
    const value = limits[field];
    if (value !== undefined && !ok(value)) {
      throw new KilnError("limits_invalid", `The key limit ${field} must be ${rule} (got ${value}).`, { status: 400 });
    }
  }
}

/** Creates a key with its own webhook signing secret; the returned `key` is the only copy of the key. */
export async function createApiKey(
  store: KeyStore,
  options: { name: string; scopes: KeyScope[]; limits?: KeyLimits; now?: Date },
): Promise<{ key: string; record: KeyRecord }> {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const prefix = Array.from(crypto.getRandomValues(new Uint8Array(10)), (b) => alphabet[b % alphabet.length]).join("");
  const key = `kiln_${prefix}_${base64url(crypto.getRandomValues(new Uint8Array(32)))}`;
  const record: KeyRecord = {
    id: `key_${randomId(8)}`,
    prefix,
    name: options.name,
    scopes: options.scopes,
    hash: await sha256Hex(key),
    createdAt: (options.now ?? new Date()).toISOString(),
    webhookSecret: generateWebhookSecret(),
  };
  if (options.limits && Object.keys(options.limits).length > 0) {
    validateKeyLimits(options.limits);
    record.limits = options.limits;
  }
  await store.insert(record);
  return { key, record };
}

/** The key's record if `presented` is a live key, else null. */
export async function verifyApiKey(store: KeyStore, presented: string): Promise<KeyRecord | null> {
  const match = KEY_PATTERN.exec(presented);
  if (!match) return null;
  const record = await store.getByPrefix(match[1]!);
  if (!record || record.revokedAt) return null;
  return timingSafeEqual(record.hash, await sha256Hex(presented)) ? record : null;
}
