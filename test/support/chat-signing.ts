import { slackSignature } from "../../packages/api/src/channels/slack/verify.js";

/** An Ed25519 key pair made in the test, as a Discord application's would be. */
export async function ed25519Pair(): Promise<{ publicHex: string; sign(message: string): Promise<string> }> {
  const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return {
    publicHex: Buffer.from(raw).toString("hex"),
    async sign(message) {
      const sig = await crypto.subtle.sign({ name: "Ed25519" }, pair.privateKey, new TextEncoder().encode(message));
      return Buffer.from(sig).toString("hex");
    },
  };
}

/** Headers Discord would send with `body`, signed now (or at `timestamp`). */
export async function discordHeaders(
  keys: { sign(message: string): Promise<string> },
  body: string,
  timestamp = String(Math.floor(Date.now() / 1000)),
): Promise<Record<string, string>> {
  return {
    "content-type": "application/json",
    "x-signature-ed25519": await keys.sign(timestamp + body),
    "x-signature-timestamp": timestamp,
  };
}

/** Headers Slack would send with a form body, signed with the app's signing secret. */
export async function slackHeaders(
  secret: string,
  body: string,
  timestamp = String(Math.floor(Date.now() / 1000)),
): Promise<Record<string, string>> {
  return {
    "content-type": "application/x-www-form-urlencoded",
    "x-slack-request-timestamp": timestamp,
    "x-slack-signature": await slackSignature(secret, timestamp, body),
  };
}
