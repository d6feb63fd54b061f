import { createRoute, z } from "@hono/zod-openapi";
import type { StageKind } from "@kiln/shared";

import type { ApiDeps } from "../deps.js";
import { apiRouter, problems } from "../http/openapi.js";
import { fail } from "../http/problem.js";

/** How far back a worker's poll counts as "this model is loaded". */
const LOOKBACK_MS = 10 * 60_000;
/** SDXL 1.0's release (2023-07-26): OpenAI's `created` is a fixed date per model, not the time of asking. */
const SDXL_RELEASED = 1_690_329_600;

const MODEL_OF: Record<StageKind, string> = { base: "sdxl-base", refine: "sdxl-refiner" };

const modelSchema = z
  .object({
    id: z.string().openapi({ example: "sdxl-base" }),
    object: z.literal("model"),
    created: z.number().int().openapi({ description: "Unix seconds (the model's release)." }),
    owned_by: z.string().openapi({ example: "kiln" }),
  })
  .openapi("OpenAIModel");

/**
 * OpenAI's `GET /v1/models` (and `/v1/models/{id}`): the models live workers serve, one per stage
 * kind seen polling in the last ten minutes, so `client.models.list()` in OpenAI's SDKs answers
 * what Kiln can render now. Without a worker registry (a deployment that does not record polls),
 * both SDXL stages are listed.
 */
export function openAiModelRoutes(deps: ApiDeps) {
  const app = apiRouter();
  const security = [{ bearer: [] }];
  const loaded = async () => {
    const now = (deps.now?.() ?? new Date()).getTime();
    const kinds = deps.ports.workers
      ? new Set((await deps.ports.workers.list(now - LOOKBACK_MS)).flatMap((b) => b.stages))
      : new Set<StageKind>(["base", "refine"]);
    return (["base", "refine"] as const)
      .filter((k) => kinds.has(k))
      .map((k) => ({ id: MODEL_OF[k], object: "model" as const, created: SDXL_RELEASED, owned_by: "kiln" }));
  };

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/models",
      operationId: "listModels",
      summary: "List models (OpenAI-compatible)",
      description: "The SDXL models live workers serve (base and refiner), in OpenAI's list shape.",
      security,
      responses: {
        200: {
          description: "The models",
          content: {
            "application/json": {
              schema: z.object({ object: z.literal("list"), data: z.array(modelSchema) }).openapi("OpenAIModelList"),
            },
          },
        },
        ...problems(401, 429),
      },
    }),
    async (c) => c.json({ object: "list" as const, data: await loaded() }, 200),
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/models/{model}",
      operationId: "getModel",
      summary: "Get a model (OpenAI-compatible)",
      security,
      request: {
        params: z.object({
          model: z
            .string()
            .max(64)
            .openapi({ param: { name: "model", in: "path" }, example: "sdxl-base" }),
        }),
      },
      responses: {
        200: { description: "The model", content: { "application/json": { schema: modelSchema } } },
        ...problems(400, 401, 404, 429),
      },
    }),
    async (c) => {
      const id = c.req.valid("param").model;
      const found = (await loaded()).find((m) => m.id === id);
      if (!found)
        fail(404, "model_not_found", `No loaded model "${id}"; GET /v1/models lists what the running workers serve.`);
      return c.json(found, 200);
    },
  );
  return app;
}
