import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { generateWebhookSecret } from "@kiln/shared";

import { signWebhook, webhookHeaders } from "../../src/outbound/webhooks/signature.js";

describe("webhook signatures (Standard Webhooks)", () => {
  it("reproduces the specification's published test vector", async () => {
    // The vector the Standard Webhooks reference libraries test against.
    const signature = await signWebhook(
      "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      "msg_p5jXN8AQM9LWM0D4loKWxJek",
      1614265330,
      '{"test": 2432232314}',
    );
    assert.equal(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  });

  it("signs id, timestamp and body: changing any one changes the signature", async () => {
    const secret = generateWebhookSecret();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const base = await signWebhook(secret, "msg_1", 1700000000, "{}");
    assert.notEqual(await signWebhook(secret, "msg_2", 1700000000, "{}"), base);
    assert.notEqual(await signWebhook(secret, "msg_1", 1700000001, "{}"), base);
    assert.notEqual(await signWebhook(secret, "msg_1", 1700000000, "{ }"), base);
    assert.notEqual(await signWebhook(generateWebhookSecret(), "msg_1", 1700000000, "{}"), base);
    assert.deepEqual(await webhookHeaders(secret, "msg_1", 1700000000, "{}"), {
      "webhook-id": "msg_1",
      "webhook-timestamp": "1700000000",
      "webhook-signature": base,
    });
  });

  it("refuses a secret that is not whsec_<base64>", async () => {
    await assert.rejects(signWebhook("secret", "m", 1, ""), /whsec_/);
    await assert.rejects(signWebhook("whsec_***", "m", 1, ""), /base64/);
  });
});
