import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { api, type LocalStack, startLocalStack } from "../support/local-stack.js";

/** `/v1/keys` over HTTP on the local family: admin scope, shown-once keys, revocation, limits in the record. */
describe("API keys over HTTP", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false, env: { KILN_CONCURRENT_JOBS: "7", KILN_RATE_LIMIT_RPS: "0" } });
  });
  after(() => stack.stop());
  const as = (key: string): LocalStack => ({ ...stack, key });

  it("creates a key shown once, with its webhook secret and limits, that works at once", async () => {
    const created = await api(stack, "POST", "/v1/keys", {
      name: "ci",
      scopes: ["render"],
      limits: { images_per_day: 50, requests_per_second: 2.5 },
    });
    assert.equal(created.status, 201, created.text);
    const body = created.json;
    assert.match(body.key, /^kiln_[a-z0-9]{10}_[A-Za-z0-9_-]{43}$/);
    assert.equal(body.key.split("_")[1], body.prefix);
    assert.match(body.webhook_secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.match(body.id, /^key_[0-9a-f]{16}$/);
    assert.deepEqual(body.scopes, ["render"]);
    assert.deepEqual(
      body.limits,
      { requests_per_second: 2.5, burst: 5, concurrent_jobs: 7, images_per_day: 50 },
      "own limits, the rest from the config",
    );
    assert.equal(created.headers.get("location"), `${stack.url}/v1/keys/${body.id}`);
    assert.equal(created.headers.get("cache-control"), "no-store");

    assert.equal((await api(as(body.key), "GET", "/v1/renders")).status, 200, "the new key authenticates");
    const stored = await stack.ports.keys.get(body.id);
    assert.notEqual(stored?.hash, undefined);
    assert.ok(!JSON.stringify(stored).includes(body.key), "only the hash of the key is stored");

    const listed = await api(stack, "GET", "/v1/keys");
    assert.equal(listed.status, 200);
    const mine = listed.json.data.find((k: { id: string }) => k.id === body.id);
    assert.deepEqual(mine, {
      id: body.id,
      name: "ci",
      prefix: body.prefix,
      scopes: ["render"],
      limits: body.limits,
      created_at: body.created_at,
    });
    for (const secret of [body.key, body.webhook_secret, stored!.hash])
      assert.ok(!listed.text.includes(secret), "listings never show keys, hashes or secrets");
    assert.deepEqual((await api(stack, "GET", `/v1/keys/${body.id}`)).json, mine);
  });

  it("gives a key without its own limits the configured defaults", async () => {
    const created = await api(stack, "POST", "/v1/keys", { name: "defaults" });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.json.scopes, ["render"], "render scope unless asked");
    assert.deepEqual(created.json.limits, { requests_per_second: 0, burst: 1, concurrent_jobs: 7, images_per_day: 0 });
  });

  it("revokes a key for good: it stops authenticating, and revoking again changes nothing", async () => {
    const { json: created } = await api(stack, "POST", "/v1/keys", { name: "temp" });
    const revoked = await api(stack, "DELETE", `/v1/keys/${created.id}`);
    assert.equal(revoked.status, 200);
    assert.match(revoked.json.revoked_at, /^\d{4}-\d\d-\d\dT/);
    const res = await api(as(created.key), "GET", "/v1/renders");
    assert.equal(res.status, 401);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    const again = await api(stack, "DELETE", `/v1/keys/${created.id}`);
    assert.equal(again.status, 200);
    assert.equal(again.json.revoked_at, revoked.json.revoked_at, "the first revocation time stands");
    const missing = await api(stack, "DELETE", "/v1/keys/key_0000000000000000");
    assert.equal(missing.status, 404);
    assert.equal(missing.json.code, "not_found");
  });

  it("lets only admin keys manage keys; a key may read its own webhook secret", async () => {
    const { json: render } = await api(stack, "POST", "/v1/keys", { name: "render-only" });
    const { json: other } = await api(stack, "POST", "/v1/keys", { name: "other" });
    for (const [method, path, body] of [
      ["POST", "/v1/keys", { name: "sneaky", scopes: ["admin"] }],
      ["GET", "/v1/keys", undefined],
      ["GET", `/v1/keys/${other.id}`, undefined],
      ["DELETE", `/v1/keys/${other.id}`, undefined],
      ["GET", `/v1/keys/${other.id}/webhook-secret`, undefined],
    ] as const) {
      const res = await api(as(render.key), method, path, body);
      assert.equal(res.status, 403, `${method} ${path}: ${res.text}`);
      assert.equal(res.json.code, "forbidden");
    }
    assert.equal((await stack.ports.keys.get(other.id))?.revokedAt, undefined, "the forbidden DELETE did nothing");

    const own = await api(as(render.key), "GET", `/v1/keys/${render.id}/webhook-secret`);
    assert.equal(own.status, 200);
    assert.deepEqual(own.json, { webhook_secret: render.webhook_secret });
    assert.deepEqual(
      (await api(stack, "GET", `/v1/keys/${other.id}/webhook-secret`)).json,
      { webhook_secret: other.webhook_secret },
      "an admin reads any",
    );

    const anonymous = await fetch(`${stack.url}/v1/keys`);
    assert.equal(anonymous.status, 401);
    const wrong = await api(as("kiln_abcdefghij_" + "A".repeat(43)), "GET", "/v1/keys");
    assert.equal(wrong.status, 401);
  });

  it("rejects invalid keys requests as problem+json naming the field", async () => {
    const cases: [unknown, string][] = [
      [{ name: "x", scopes: ["root"] }, "scopes.0"],
      [{ name: "" }, "name"],
      [{ name: "x", limits: { burst: 0 } }, "limits.burst"],
      [{ name: "x", limits: { concurrent_jobs: 1.5 } }, "limits.concurrent_jobs"],
      [{ name: "x", limits: { requests_per_second: -1 } }, "limits.requests_per_second"],
      [{ name: "x", owner: "me" }, "owner"],
    ];
    for (const [body, field] of cases) {
      const res = await api(stack, "POST", "/v1/keys", body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      assert.ok(
        res.json.errors.some((e: { field: string }) => e.field === field),
        `${JSON.stringify(body)} names ${field}: ${JSON.stringify(res.json.errors)}`,
      );
    }
  });

  it("documents the key routes in /openapi.json with the bearer scheme", async () => {
    const doc = (await api(stack, "GET", "/openapi.json")).json;
    assert.deepEqual(Object.keys(doc.paths["/v1/keys"]).sort(), ["get", "post"]);
    assert.deepEqual(Object.keys(doc.paths["/v1/keys/{id}"]).sort(), ["delete", "get"]);
    assert.ok(doc.paths["/v1/keys/{id}/webhook-secret"].get);
    assert.deepEqual(doc.paths["/v1/keys"].post.security, [{ bearer: [] }]);
    assert.ok(doc.paths["/v1/keys"].post.responses["201"]);
    assert.match(JSON.stringify(doc.components.schemas.ApiKeyCreated), /"webhook_secret"/);
    assert.ok(doc.components.schemas.KeyLimits.properties.images_per_day);
    assert.ok(doc.paths["/v1/renders"].post.responses["429"], "submits document their 429");
    assert.ok(
      doc.paths["/v1/renders"].post.parameters.some(
        (p: { name: string }) => p.name.toLowerCase() === "idempotency-key",
      ),
    );
    assert.ok(doc.components.schemas.RenderRequest.properties.webhook, "render requests take a webhook");
  });
});
