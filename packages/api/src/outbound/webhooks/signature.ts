import { KilnError } from "@kiln/shared";

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): HMAC-SHA256 over
 * `<webhook-id>.<webhook-timestamp>.<body>` with the base64 key after the secret's `whsec_`
 * prefix, sent as `v1,<base64>`. Web Crypto only, so any runtime can sign.
 */
export async function signWebhook(secret: string, id: string, timestampSeconds: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", secretBytes(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestampSeconds}.${body}`)),
  );
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}

/** The headers of one delivery attempt; the timestamp (and so the signature) is fresh per attempt, the id is not. */
export async function webhookHeaders(
  secret: string,
  id: string,
  timestampSeconds: number,
  body: string,
): Promise<Record<string, string>> {
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestampSeconds),
    "webhook-signature": await signWebhook(secret, id, timestampSeconds, body),
  };
}

function secretBytes(secret: string): Uint8Array<ArrayBuffer> {
  if (!secret.startsWith("whsec_")) {
    throw new KilnError(
      "webhook_secret_invalid",
      "A webhook secret must look like whsec_<base64>; create a new API key to get one.",
    );
  }
  try {
    return Uint8Array.from(atob(secret.slice("whsec_".length)), (c) => c.charCodeAt(0));
  } catch (cause) {
    throw new KilnError(
      "webhook_secret_invalid",
      "The webhook secret after whsec_ is not valid base64; create a new API key to get one.",
      { cause },
    );
  }
}
