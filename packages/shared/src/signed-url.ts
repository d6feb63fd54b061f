/**
 * Short-lived download URLs for the local family's blobs, which the API serves at
 * `/v1/files/<key>?expires=<epoch seconds>&sig=<hex HMAC-SHA256(secret, key + "\n" + expires)>`.
 * Web Crypto only, so the API core can verify them on any runtime.
 */

const encoder = new TextEncoder();

async function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
}

const signedText = (key: string, expires: number) => encoder.encode(`${key}\n${expires}`);

/** Hex HMAC-SHA256 of `key + "\n" + expires`. */
export async function signDownload(key: string, expires: number, secret: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), signedText(key, expires));
  return Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
}

export interface SignedDownloadUrlInput {
  publicBaseUrl: string;
  key: string;
  /** Epoch seconds after which the URL no longer works. */
  expires: number;
  secret: string;
  /**
   * Suggested name for Content-Disposition. Not covered by the signature: it only renames a file
   * the holder may already download, so the API must still sanitise it before using it in a header.
   */
  filename?: string;
}

export async function signedDownloadUrl(input: SignedDownloadUrlInput): Promise<string> {
  const path = input.key.split("/").map(encodeURIComponent).join("/");
  const query = new URLSearchParams({
    expires: String(input.expires),
    sig: await signDownload(input.key, input.expires, input.secret),
  });
  if (input.filename !== undefined) query.set("filename", input.filename);
  return `${input.publicBaseUrl.replace(/\/+$/, "")}/v1/files/${path}?${query}`;
}

/**
 * Checks a download URL's `expires` and `sig` query values (as received, strings or numbers)
 * for `key`. False when expired, malformed or forged. `nowMs` is epoch milliseconds.
 */
export async function verifyDownloadSignature(
  key: string,
  expires: string | number,
  sig: string,
  secret: string,
  nowMs: number,
): Promise<boolean> {
  const expiresText = String(expires);
  if (!/^\d{1,12}$/.test(expiresText) || !/^[0-9a-f]{64}$/i.test(sig)) return false;
  const expiresAt = Number(expiresText);
  if (nowMs >= expiresAt * 1000) return false;
  const mac = new Uint8Array(32);
  for (let i = 0; i < 32; i++) mac[i] = parseInt(sig.slice(i * 2, i * 2 + 2), 16);
  // subtle.verify compares in constant time, unlike comparing hex strings.
  return crypto.subtle.verify("HMAC", await hmacKey(secret), mac, signedText(key, expiresAt));
}
