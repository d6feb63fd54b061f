import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { verifyKey } from "discord-interactions";

import { ed25519Pair } from "../../../../test/support/chat-signing.js";
import { verifyDiscordRequest, verifyDiscordSignature } from "../../src/channels/discord/verify.js";
import { slackSignature, verifySlackRequest, verifySlackSignature } from "../../src/channels/slack/verify.js";

// Slack's published example (api.slack.com/authentication/verifying-requests-from-slack).
const SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS = "1531420618";
const SLACK_BODY =
  "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

function discordRequest(body: string, signature: string, timestamp: string): Request {
  return new Request("http://kiln.test/integrations/discord", {
    method: "POST",
    headers: {
      "x-signature-ed25519": signature,
      "x-signature-timestamp": timestamp,
      "content-type": "application/json",
    },
    body,
  });
}

describe("Slack request signatures", () => {
  it("reproduces Slack's published example", async () => {
    assert.equal(await slackSignature(SLACK_SECRET, SLACK_TS, SLACK_BODY), SLACK_SIG);
    assert.equal(await verifySlackSignature(SLACK_SECRET, SLACK_TS, SLACK_BODY, SLACK_SIG), true);
  });

  it("refuses a tampered body, a wrong secret, a malformed header", async () => {
    assert.equal(
      await verifySlackSignature(SLACK_SECRET, SLACK_TS, SLACK_BODY.replace("foobar", "foobaz"), SLACK_SIG),
      false,
    );
    assert.equal(await verifySlackSignature("another-secret-000", SLACK_TS, SLACK_BODY, SLACK_SIG), false);
    assert.equal(await verifySlackSignature(SLACK_SECRET, "1531420619", SLACK_BODY, SLACK_SIG), false);
    assert.equal(await verifySlackSignature(SLACK_SECRET, SLACK_TS, SLACK_BODY, SLACK_SIG.slice(0, -2)), false);
    assert.equal(
      await verifySlackSignature(SLACK_SECRET, SLACK_TS, SLACK_BODY, SLACK_SIG.replace("v0=", "v1=")),
      false,
    );
  });

  it("accepts the example at its own time and refuses it more than 5 minutes later", async () => {
    const request = () =>
      new Request("http://kiln.test/integrations/slack/commands", {
        method: "POST",
        headers: { "x-slack-signature": SLACK_SIG, "x-slack-request-timestamp": SLACK_TS },
        body: SLACK_BODY,
      });
    const at = Number(SLACK_TS) * 1000;
    const ok = await verifySlackRequest(request(), SLACK_SECRET, at + 60_000);
    assert.equal(ok.ok, true);
    assert.equal(ok.ok && ok.body, SLACK_BODY);
    const stale = await verifySlackRequest(request(), SLACK_SECRET, at + 301_000);
    assert.equal(stale.ok, false);
    assert.match(!stale.ok ? stale.reason : "", /more than 5 minutes/);
  });
});

describe("Discord request signatures (Ed25519, Web Crypto)", () => {
  it("agrees with discord-interactions' verifyKey on genuine and tampered requests", async () => {
    const keys = await ed25519Pair();
    const timestamp = String(Math.floor(Date.now() / 1000));
    const body = JSON.stringify({ type: 1, id: "1", application_id: "2" });
    const signature = await keys.sign(timestamp + body);
    const raw = new TextEncoder().encode(body);
    assert.equal(await verifyKey(raw, signature, timestamp, keys.publicHex), true);
    assert.equal(await verifyDiscordSignature(raw, signature, timestamp, keys.publicHex), true);
    for (const [b, s, t] of [
      [body.replace("1", "3"), signature, timestamp],
      [body, signature.replace(/^./, (c) => (c === "a" ? "b" : "a")), timestamp],
      [body, signature, String(Number(timestamp) + 1)],
      [body, signature.slice(2), timestamp],
    ] as const) {
      const bytes = new TextEncoder().encode(b);
      assert.equal(await verifyKey(bytes, s, t, keys.publicHex), false);
      assert.equal(await verifyDiscordSignature(bytes, s, t, keys.publicHex), false);
    }
    const other = await ed25519Pair();
    assert.equal(await verifyDiscordSignature(raw, signature, timestamp, other.publicHex), false);
  });

  it("refuses stale and future timestamps before verifying", async () => {
    const keys = await ed25519Pair();
    const nowMs = Date.now();
    for (const offset of [-301, 301]) {
      const timestamp = String(Math.floor(nowMs / 1000) + offset);
      const body = '{"type":1}';
      const result = await verifyDiscordRequest(
        discordRequest(body, await keys.sign(timestamp + body), timestamp),
        keys.publicHex,
        nowMs,
      );
      assert.equal(result.ok, false);
    }
    const timestamp = String(Math.floor(nowMs / 1000) - 200);
    const body = '{"type":1}';
    const fresh = await verifyDiscordRequest(
      discordRequest(body, await keys.sign(timestamp + body), timestamp),
      keys.publicHex,
      nowMs,
    );
    assert.equal(fresh.ok, true);
  });
});
