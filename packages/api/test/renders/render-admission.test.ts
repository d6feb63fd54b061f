import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { type KeyRecord, type Ports, renderRequestSchema } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { LimitExceededError } from "../../src/quotas/limit-exceeded.js";
import { admitRender, effectiveLimits, renderAdmission } from "../../src/renders/render-admission.js";
import { jobRecord } from "../fixtures.js";

const key = (limits?: KeyRecord["limits"], webhookSecret: string | null = "whsec_AAAA"): KeyRecord => ({
  id: "key_adm",
  prefix: "p",
  name: "n",
  scopes: ["render"],
  hash: "h",
  createdAt: "2030-01-01T00:00:00.000Z",
  ...(limits ? { limits } : {}),
  ...(webhookSecret ? { webhookSecret } : {}),
});
const request = (extra: Record<string, unknown> = {}) =>
  renderRequestSchema().parse({ prompt: "p", width: 64, height: 64, ...extra });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("render admission", () => {
  let local: TempLocalPorts;
  let ports: Ports;
  beforeEach(() => {
    local = openTempLocalPorts({ prefix: "kiln-admission-", publicBaseUrl: "http://127.0.0.1" });
    ports = local.ports;
  });
  afterEach(() => local.close());

  it("takes each limit from the key, else from the defaults, with a burst of twice the key's own rate", () => {
    const defaults = { requestsPerSecond: 10, burst: 30, concurrentJobs: 4, imagesPerDay: 100 };
    assert.deepEqual(effectiveLimits(key(), defaults), defaults);
    assert.deepEqual(effectiveLimits(key({ requestsPerSecond: 2.5 }), defaults), {
      ...defaults,
      requestsPerSecond: 2.5,
      burst: 5,
    });
    assert.deepEqual(effectiveLimits(key({ requestsPerSecond: 2, burst: 9, imagesPerDay: 0 }), defaults), {
      ...defaults,
      requestsPerSecond: 2,
      burst: 9,
      imagesPerDay: 0,
    });
    assert.deepEqual(effectiveLimits(key({ concurrentJobs: 1 })), {
      requestsPerSecond: 0,
      burst: 1,
      concurrentJobs: 1,
      imagesPerDay: 0,
    });
  });

  it("holds the concurrency limit when submits interleave between counting and writing", async () => {
    // Every submit counts before any writes: each read of the store waits until all ten submits have made the same
    // read (a barrier, not a sleep — under load, sleeps let a fast submit write its job before a slow one counted,
    // which the slow one then counts twice, in the store and in the in-flight counter). Only the in-flight counter
    // stops the excess.
    const submits = 10;
    const arrived = new Map<string, { count: number; all: Promise<void>; open: () => void }>();
    const listByOwner = ports.jobs.listByOwner.bind(ports.jobs);
    ports.jobs.listByOwner = async (...args) => {
      const status = String(args[1]?.status);
      let gate = arrived.get(status);
      if (!gate) {
        let open!: () => void;
        const all = new Promise<void>((resolve) => (open = resolve));
        arrived.set(status, (gate = { count: 0, all, open }));
      }
      if (++gate.count === submits) gate.open();
      await gate.all;
      return listByOwner(...args);
    };
    const admission = renderAdmission(key({ concurrentJobs: 3 }), {});
    let n = 0;
    const results = await Promise.allSettled(
      Array.from({ length: submits }, () =>
        admitRender(ports, admission, request(), new Date(), async () => {
          await sleep(5);
          return ports.jobs.create(jobRecord({}, { id: `job_${n++}`, ownerKeyId: "key_adm" }));
        }),
      ),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 3);
    for (const r of results)
      if (r.status === "rejected")
        assert.ok(r.reason instanceof LimitExceededError && r.reason.code === "concurrent_jobs_exceeded");
    assert.equal(await ports.keys.incrementCounter("submitting:key_adm", 0), 0, "every submit gave its place back");
  });

  it("gives back the images of a render whose job could not be written", async () => {
    const admission = renderAdmission(key({ imagesPerDay: 3 }), {});
    await assert.rejects(
      admitRender(ports, admission, request({ n: 2 }), new Date(), async () => {
        throw new Error("store down");
      }),
      /store down/,
    );
    assert.equal(
      await admitRender(ports, admission, request({ n: 3 }), new Date(), async () => "created"),
      "created",
      "the failed render's images were refunded",
    );
  });

  it("refuses a webhook the key cannot sign or the policy forbids, before taking any quota", async () => {
    const create = async () => "created";
    const hook = (url: string) => request({ webhook: { url } });
    await assert.rejects(
      admitRender(ports, renderAdmission(key(undefined, null), {}), hook("https://example.com/h"), new Date(), create),
      /webhook_secret_missing|no webhook signing secret/,
    );
    const strict = renderAdmission(key({ imagesPerDay: 1 }), {
      webhooks: {
        allowPrivate: false,
        allowedHosts: [],
        resolveHost: async (host) =>
          host === "evil.test" ? ["10.0.0.9"] : host === "gone.test" ? [] : ["93.184.216.34"],
      },
    });
    await assert.rejects(
      admitRender(ports, strict, hook("http://127.0.0.1/h"), new Date(), create),
      (e: unknown) => (e as { code?: string }).code === "webhook_url_refused",
    );
    await assert.rejects(
      admitRender(ports, strict, hook("http://evil.test/h"), new Date(), create),
      /evil\.test \(10\.0\.0\.9\) is a private address/,
    );
    await assert.rejects(
      admitRender(ports, strict, hook("http://gone.test/h"), new Date(), create),
      /does not resolve/,
    );
    assert.equal(
      await admitRender(ports, strict, hook("https://hooks.example.com/h"), new Date(), create),
      "created",
      "the refusals took no images",
    );
    const flaky = renderAdmission(key(), {
      webhooks: {
        allowPrivate: false,
        allowedHosts: [],
        resolveHost: async () => Promise.reject(new Error("EAI_AGAIN")),
      },
    });
    assert.equal(
      await admitRender(ports, flaky, hook("https://hooks.example.com/h"), new Date(), create),
      "created",
      "a DNS hiccup defers the check to delivery",
    );
  });
});
