import { hexToBytes, timestampRefusal } from "../core/replay.js";

const imported = new Map<string, Promise<CryptoKey>>();

function publicKey(hex: string): Promise<CryptoKey> {
  let key = imported.get(hex);
  if (!key) {
    const raw = hexToBytes(hex);
    if (!raw || raw.length !== 32) throw new Error("the Discord public key must be 32 bytes of hex");
    key = crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    imported.set(hex, key);
  }
  return key;
}

/** Ed25519 over `timestamp + body` with the application's public key (Web Crypto). */
export async function verifyDiscordSignature(
  body: Uint8Array,
  signatureHex: string,
  timestamp: string,
  publicKeyHex: string,
): Promise<boolean> {
  const signature = hexToBytes(signatureHex);
  if (!signature || signature.length !== 64) return false;
  const stamp = new TextEncoder().encode(timestamp);
  const message = new Uint8Array(stamp.length + body.length);
  message.set(stamp);
  message.set(body, stamp.length);
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, await publicKey(publicKeyHex), signature, message);
  } catch {
    return false;
  }
}

export type Verified = { ok: true; body: string; signature: string } | { ok: false; reason: string };

/**
 * Reads the raw body and checks Discord's signature and timestamp before anything parses it.
 * Discord sends invalid signatures on purpose to check that endpoints refuse them.
 */
export async function verifyDiscordRequest(request: Request, publicKeyHex: string, nowMs: number): Promise<Verified> {
  const signature = request.headers.get("x-signature-ed25519") ?? "";
  const timestamp = request.headers.get("x-signature-timestamp") ?? "";
  const stale = timestampRefusal(timestamp, nowMs);
  if (stale) return { ok: false, reason: stale };
  const raw = new Uint8Array(await request.arrayBuffer());
  if (!(await verifyDiscordSignature(raw, signature, timestamp, publicKeyHex)))
    return { ok: false, reason: "the Ed25519 signature does not match the body" };
  return { ok: true, body: new TextDecoder().decode(raw), signature };
}
