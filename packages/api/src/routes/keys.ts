import { createRoute, z } from "@hono/zod-openapi";
import { createApiKey, type KeyLimits, type KeyRecord } from "@kiln/shared";
import type { MiddlewareHandler } from "hono";

import type { ApiDeps, ApiEnv } from "../deps.js";
import { apiRouter, problems } from "../http/openapi.js";
import { fail } from "../http/problem.js";
import { effectiveLimits } from "../renders/render-admission.js";

const security = [{ bearer: [] }];
const idParam = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "id", in: "path" }, example: "key_0123456789abcdef" }),
});

const limitsSchema = z
  .object({
    requests_per_second: z
      .number()
      .min(0)
      .max(100_000)
      .optional()
      .openapi({ description: "Sustained request rate (token bucket refill). 0 = no limit." }),
    burst: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .openapi({ description: "Requests allowed at once after a quiet spell. Default: twice the rate." }),
    concurrent_jobs: z
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .optional()
      .openapi({ description: "Renders queued or running at once. 0 = no limit." }),
    images_per_day: z
      .number()
      .int()
      .min(0)
      .max(1_000_000_000)
      .optional()
      .openapi({ description: "Images requested per UTC day (the `n` of each accepted render). 0 = no limit." }),
  })
  .strict()
  .openapi("KeyLimits", {
    description:
      "Fields left out take the server's defaults (KILN_RATE_LIMIT_RPS, KILN_RATE_LIMIT_BURST, KILN_CONCURRENT_JOBS, KILN_IMAGES_PER_DAY).",
  });

const keyViewSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    prefix: z.string().openapi({ description: "The public start of the key (`kiln_<prefix>_…`), to recognise it." }),
    scopes: z.array(z.enum(["render", "admin"])),
    limits: z
      .object({
        requests_per_second: z.number(),
        burst: z.number().int(),
        concurrent_jobs: z.number().int(),
        images_per_day: z.number().int(),
      })
      .openapi({ description: "The limits in force: the key's own, else the server's defaults. 0 = no limit." }),
    created_at: z.string(),
    revoked_at: z.string().optional(),
  })
  .openapi("ApiKey");

const createdSchema = keyViewSchema
  .extend({
    key: z.string().openapi({ description: "The API key. Shown only in this response: Kiln stores only its hash." }),
    webhook_secret: z.string().openapi({
      description:
        "`whsec_…`: verifies this key's webhook deliveries (Standard Webhooks). Also readable later at GET /v1/keys/{id}/webhook-secret.",
    }),
  })
  .openapi("ApiKeyCreated");

const createSchema = z
  .object({
    name: z.string().min(1).max(200).openapi({ description: "Who or what uses the key.", example: "ci-pipeline" }),
    scopes: z
      .array(z.enum(["render", "admin"]))
      .min(1)
      .default(["render"])
      .openapi({ description: "`render`: submit and read own renders. `admin`: also manage keys." }),
    limits: limitsSchema.optional(),
  })
  .strict()
  .openapi("ApiKeyCreate");

const json = <T extends z.ZodTypeAny>(schema: T) => ({ content: { "application/json": { schema } } });

/** Only admin keys pass; the key itself was checked by `requireKey`. */
const adminOnly: MiddlewareHandler<ApiEnv> = async (c, next) => {
  if (!c.get("key")?.scopes.includes("admin"))
    fail(403, "forbidden", 'Managing API keys needs a key with the "admin" scope.');
  await next();
};

/** API keys: create (shown once), list, read, revoke; and the webhook secret each key signs with. Admin scope. */
export function keyRoutes(deps: ApiDeps) {
  const app = apiRouter();
  const now = () => deps.now?.() ?? new Date();
  const view = (key: KeyRecord) => {
    const limits = effectiveLimits(key, deps.keyLimits);
    return {
      id: key.id,
      name: key.name,
      prefix: key.prefix,
      scopes: key.scopes,
      limits: {
        requests_per_second: limits.requestsPerSecond,
        burst: limits.burst,
        concurrent_jobs: limits.concurrentJobs,
        images_per_day: limits.imagesPerDay,
      },
      created_at: key.createdAt,
      revoked_at: key.revokedAt,
    };
  };
  const notFound = (id: string): never => fail(404, "not_found", `No API key ${id}; list them with GET /v1/keys.`);

  app.use("/v1/keys", adminOnly);
  app.use("/v1/keys/:id", adminOnly);

  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/keys",
      operationId: "createKey",
      summary: "Create an API key",
      description: "Answers 201 with the key and its webhook secret. The key is shown only here; store it now.",
      security,
      request: { body: { required: true, ...json(createSchema) } },
      responses: { 201: { description: "Created", ...json(createdSchema) }, ...problems(400, 401, 403, 429) },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const limits: KeyLimits = {};
      if (body.limits?.requests_per_second !== undefined) limits.requestsPerSecond = body.limits.requests_per_second;
      if (body.limits?.burst !== undefined) limits.burst = body.limits.burst;
      if (body.limits?.concurrent_jobs !== undefined) limits.concurrentJobs = body.limits.concurrent_jobs;
      if (body.limits?.images_per_day !== undefined) limits.imagesPerDay = body.limits.images_per_day;
      const { key, record } = await createApiKey(deps.ports.keys, {
        name: body.name,
        scopes: [...new Set(body.scopes)],
        limits,
        now: now(),
      });
      const location = `${deps.publicUrl || new URL(c.req.url).origin}/v1/keys/${record.id}`;
      return c.json({ ...view(record), key, webhook_secret: record.webhookSecret! }, 201, {
        Location: location,
        "Cache-Control": "no-store",
      });
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/keys",
      operationId: "listKeys",
      summary: "List API keys",
      description: "Every key, oldest first, revoked ones included. Never shows a key or its hash.",
      security,
      responses: {
        200: { description: "The keys", ...json(z.object({ data: z.array(keyViewSchema) }).openapi("ApiKeyList")) },
        ...problems(401, 403, 429),
      },
    }),
    async (c) => c.json({ data: (await deps.ports.keys.list()).map(view) }, 200),
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/keys/{id}",
      operationId: "getKey",
      summary: "Get an API key",
      security,
      request: { params: idParam },
      responses: { 200: { description: "The key", ...json(keyViewSchema) }, ...problems(400, 401, 403, 404, 429) },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const key = await deps.ports.keys.get(id);
      return key ? c.json(view(key), 200) : notFound(id);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/v1/keys/{id}",
      operationId: "revokeKey",
      summary: "Revoke an API key",
      description:
        "The key stops working at once, for every API instance. Revoking a revoked key changes nothing (200). Its renders keep running and their webhooks are still delivered.",
      security,
      request: { params: idParam },
      responses: { 200: { description: "Revoked", ...json(keyViewSchema) }, ...problems(400, 401, 403, 404, 429) },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      await deps.ports.keys.revoke(id, now().toISOString());
      const key = await deps.ports.keys.get(id);
      return key ? c.json(view(key), 200) : notFound(id);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/keys/{id}/webhook-secret",
      operationId: "getKeyWebhookSecret",
      summary: "Get a key's webhook secret",
      description:
        "The `whsec_…` secret that signs the webhooks of this key's renders. An admin key may read any key's; any key may read its own.",
      security,
      request: { params: idParam },
      responses: {
        200: { description: "The secret", ...json(z.object({ webhook_secret: z.string() }).openapi("WebhookSecret")) },
        ...problems(400, 401, 403, 404, 429),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const caller = c.get("key");
      if (caller.id !== id && !caller.scopes.includes("admin")) {
        fail(403, "forbidden", 'Only the key itself or a key with the "admin" scope may read its webhook secret.');
      }
      const key = await deps.ports.keys.get(id);
      if (!key) return notFound(id);
      if (!key.webhookSecret) {
        fail(
          404,
          "webhook_secret_missing",
          `API key ${id} predates webhooks and has no webhook secret; create a new key to use webhooks.`,
        );
      }
      return c.json({ webhook_secret: key.webhookSecret }, 200, { "Cache-Control": "no-store" });
    },
  );

  return app;
}
