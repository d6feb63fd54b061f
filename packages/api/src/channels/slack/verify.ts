import { hexToBytes, timestampRefusal } from "../core/replay.js";

const imported = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = imported.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    imported.set(secret, key);
  }
  return key;
}

/** `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>` (Slack's request signing, version 0). */
export async function slackSignature(secret: string, timestamp: string, body: Uint8Array | string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), basestring(timestamp, body));
  return `v0=${[...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function basestring(timestamp: string, body: Uint8Array | string): Uint8Array<ArrayBuffer> {
  const head = new TextEncoder().encode(`v0:${timestamp}:`);
  const tail = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const out = new Uint8Array(head.length + tail.length);
  out.set(head);
  out.set(tail, head.length);
  return out;
}

/**
 * Checks a signature in constant time: Web Crypto's HMAC verify compares the MAC itself, so no
 * byte-by-byte string comparison leaks how much of a forged signature was right.
 */
export async function verifySlackSignature(
  secret: string,
  timestamp: string,
  body: Uint8Array | string,
  header: string,
): Promise<boolean> {
  const match = /^v0=([0-9a-f]{64})$/.exec(header);
  const mac = match ? hexToBytes(match[1]!) : null;
  if (!mac) return false;
  return crypto.subtle.verify("HMAC", await hmacKey(secret), mac, basestring(timestamp, body));
}

export type Verified = { ok: true; body: string; signature: string } | { ok: false; reason: string };

export async function verifySlackRequest(request: Request, secret: string, nowMs: number): Promise<Verified> {
  const signature = request.headers.get("x-slack-signature") ?? "";
  const timestamp = request.headers.get("x-slack-request-timestamp") ?? "";
  const stale = timestampRefusal(timestamp, nowMs);
  if (stale) return { ok: false, reason: stale };
  const raw = new Uint8Array(await request.arrayBuffer());
  if (!(await verifySlackSignature(secret, timestamp, raw, signature)))
    return { ok: false, reason: "X-Slack-Signature does not match the body" };
  return { ok: true, body: new TextDecoder().decode(raw), signature };
}
