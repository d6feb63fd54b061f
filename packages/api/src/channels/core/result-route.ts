import { Hono } from "hono";

import type { ApiEnv } from "../../deps.js";
import { fail } from "../../http/problem.js";
import type { ApiRuntime } from "../../runtime.js";

/**
 * `GET /integrations/results/{job}`: where a chat message links when it cannot carry the images
 * (a Discord job that outlived its token without a bot token). Only chat jobs are served — their
 * pictures were meant for a channel anyway — and the job id (96 random bits) is the capability.
 * Redirects to a fresh signed URL of the first image, or says how the render is doing.
 */
export function resultRoutes(rt: ApiRuntime) {
  const app = new Hono<ApiEnv>().basePath("/integrations/results");
  app.get("/:jobId", async (c) => {
    const job = await rt.deps.ports.jobs.get(c.req.param("jobId"));
    if (!job?.chat) fail(404, "not_found", "No chat render with this id (outputs are kept for a limited time).");
    if (job.status === "succeeded" && job.images.length > 0) {
      const image = job.images[0]!;
      const url = await rt.deps.ports.blobs.downloadUrl(image.key, {
        expiresSeconds: rt.deps.downloadUrlSeconds,
        filename: `${job.id}-${image.index}.${image.format === "jpeg" ? "jpg" : image.format}`,
      });
      return c.redirect(url, 302);
    }
    const state =
      job.status === "queued" || job.status === "running"
        ? `still ${job.status}; reload this page in a little while`
        : `${job.status}: ${job.error?.message ?? "no images"}`;
    return c.text(
      `Kiln render ${job.id} is ${state}.\n`,
      job.status === "queued" || job.status === "running" ? 202 : 200,
      {
        "retry-after": "10",
      },
    );
  });
  return app;
}
