/**
 * A manifest whose `notify` names a chat platform without a configured bot is refused at submit
 * (POST /v1/batches, dry run included, and PUT /v1/manifests), naming the field and, for YAML,
 * its line — not discovered at 02:00 in a log.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { loadConfig } from "@kiln/shared";

import { batchChatPlatforms } from "../../src/batches/chat-notifier.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

const YAML = `id: told
defaults: { steps: 2, width: 64, height: 64, mode: base }
prompts: [a lamp]
notify:
  slack:
    channel: C0123
  discord:
    channel_id: "42"
`;

describe("notify targets at manifest submit", () => {
  let slackOnly: AppFixture;
  let auth: Record<string, string>;

  before(async () => {
    slackOnly = openAppFixture({ batches: { notifyPlatforms: ["slack"] } });
    auth = await slackOnly.keyHeaders();
  });
  after(() => slackOnly.close());

  const errors = async (res: Response) => {
    assert.equal(res.status, 400);
    assert.match(res.headers.get("content-type") ?? "", /problem\+json/);
    return ((await res.json()) as { code: string; errors: { field: string; message: string; line?: number }[] }).errors;
  };

  it("PUT /v1/manifests names notify.discord, its line and the variable to set", async () => {
    const res = await slackOnly.app.request("/v1/manifests/told", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/yaml" },
      body: YAML,
    });
    const [issue, ...rest] = await errors(res);
    assert.equal(rest.length, 0, "Slack is configured: only Discord is refused");
    assert.equal(issue!.field, "$.notify.discord");
    assert.equal(issue!.line, 8, "the line of notify.discord's value");
    assert.match(issue!.message, /KILN_DISCORD_BOT_TOKEN/);
    assert.equal((await slackOnly.app.request("/v1/manifests/told", { headers: auth })).status, 404, "not stored");
  });

  it("POST /v1/batches (and its dry run) refuses it before anything is enqueued", async () => {
    for (const query of ["", "?dry_run=true"]) {
      const res = await slackOnly.app.request(`/v1/batches${query}`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/yaml" },
        body: YAML,
      });
      assert.deepEqual(
        (await errors(res)).map((e) => e.field),
        ["$.notify.discord"],
      );
    }
    assert.equal((await slackOnly.ports.queue.depth("kiln-base-batch")).visible, 0);
  });

  it("with no bot at all both are named; a manifest without chat targets is accepted", async () => {
    const none = openAppFixture({ batches: { notifyPlatforms: [] } });
    try {
      const headers = { ...(await none.keyHeaders()), "content-type": "application/yaml" };
      const res = await none.app.request("/v1/batches?dry_run=true", { method: "POST", headers, body: YAML });
      const issues = await errors(res);
      assert.deepEqual(
        issues.map((e) => e.field),
        ["$.notify.slack", "$.notify.discord"],
      );
      assert.match(issues[0]!.message, /KILN_SLACK_BOT_TOKEN/);
      const plain = YAML.slice(0, YAML.indexOf("notify:"));
      const ok = await none.app.request("/v1/batches?dry_run=true", { method: "POST", headers, body: plain });
      assert.equal(ok.status, 200);
    } finally {
      await none.close();
    }
  });

  it("the platforms come from the bots' tokens", () => {
    assert.deepEqual(batchChatPlatforms(loadConfig({}).chat), []);
    assert.deepEqual(
      batchChatPlatforms(loadConfig({ KILN_SLACK_BOT_TOKEN: "xoxb-1", KILN_DISCORD_BOT_TOKEN: "d" }).chat),
      ["slack", "discord"],
    );
  });
});
