import type { KeyRecord, KeyScope, KeyStore } from "./ports/key-store.js";

/**
 * API keys: `kiln_<prefix>_<secret>`. The prefix is public and indexes the record; the whole key is
 * stored only as a SHA-256 hash and compared in constant time. Web Crypto only, so the API core can
 * run on any runtime.
 */
const KEY_PATTERN = /^kiln_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$/;

const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const base64url = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

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

export async function createApiKey(store: KeyStore, options: { name: string; scopes: KeyScope[]; now?: Date }): Promise<{ key: string; record: KeyRecord }> {
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
  };
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
