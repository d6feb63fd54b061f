import { createRoute, z } from "@hono/zod-openapi";
import { blobKeys, describeError, isTerminal, type JobRecord } from "@kiln/shared";
import { type SSEStreamingApi, streamSSE } from "hono/streaming";

import { apiRouter, problems } from "../http/openapi.js";
import { sleep } from "../http/sleep.js";
import {
  compareKeys,
  END_ID,
  type EventKey,
  parseEventId,
  positionId,
  progressId,
  stageId,
} from "../renders/event-ids.js";
import { latentPreview } from "../renders/latent-preview.js";
import type { ApiRuntime } from "../runtime.js";

interface OutEvent {
  event: string;
  id?: string;
  data: unknown;
}

const DESCRIPTION = `Server-Sent Events for one render, until it ends:

- \`position\` (id \`q.<n>\`): queue position changed while queued; data \`{position, waiting_reason, eta}\`.
- \`stage\` (id \`r.<stage>.0\`): a stage started; data \`{stage, kind, stages, started_at, worker}\`.
- \`progress\` (id \`r.<stage>.<step>\`): denoising progress, at most every 500 ms and always the last step of a stage; data \`{stage, kind, step, steps}\`.
- \`preview\` (no id; only with \`previews=true\`): when a stage hands its latents over, a low-resolution PNG per image (one pixel per 8×8 block) from SDXL's linear latent→RGB approximation; for an ensemble render these latents still carry noise. There are no previews within a stage.
- \`succeeded\` | \`failed\` | \`canceled\` | \`expired\` (id \`end\`): the render as \`GET /v1/renders/{id}\` returns it; the stream then closes.

Reconnect with \`Last-Event-ID\`: only later events are sent, and the terminal event is sent unless the client already has it (then 204, which tells EventSource to stop). Comment lines every 15 s keep proxies from closing an idle stream; the server ends a stream after a while (15 min by default) and the client resumes with Last-Event-ID.`;

/** `GET /v1/renders/{id}/events`: the job polled server-side and told as Server-Sent Events. */
export function eventRoutes(rt: ApiRuntime) {
  const { deps } = rt;
  const app = apiRouter();

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/renders/{id}/events",
      operationId: "streamRenderEvents",
      summary: "Stream a render's events (SSE)",
      description: DESCRIPTION,
      security: [{ bearer: [] }],
      request: {
        params: z.object({
          id: z
            .string()
            .min(1)
            .max(64)
            .openapi({ param: { name: "id", in: "path" } }),
        }),
        query: z.object({
          previews: z
            .enum(["true", "false"])
            .optional()
            .openapi({ param: { name: "previews", in: "query" } }),
        }),
        headers: z.object({
          "last-event-id": z.string().optional().openapi({ description: "Resume after this event id." }),
        }),
      },
      responses: {
        200: { description: "An event stream", content: { "text/event-stream": { schema: z.string() } } },
        204: { description: "The client already has the terminal event" },
        ...problems(400, 401, 403, 404, 429),
      },
    }),
    async (c) => {
      const first = await rt.ownJob(c, c.req.valid("param").id);
      const previews = c.req.valid("query").previews === "true";
      let cursor = parseEventId(c.req.header("last-event-id"));
      if (cursor && cursor[0] === 2) {
        if (isTerminal(first.status)) return c.body(null, 204) as never;
        cursor = undefined;
      }
      // Proxies such as nginx buffer responses unless told not to.
      c.header("X-Accel-Buffering", "no");
      return streamSSE(c, async (stream) => {
        try {
          await runStream(c, stream, first, cursor, previews);
        } catch (e) {
          // The client reconnects with Last-Event-ID and resumes; the error is the operator's to see.
          deps.log?.("error", { err: describeError(e), jobId: first.id }, "event stream failed");
        }
      }) as never;
    },
  );

  async function runStream(
    c: Parameters<ApiRuntime["view"]>[0],
    stream: SSEStreamingApi,
    first: JobRecord,
    start: EventKey | undefined,
    previews: boolean,
  ) {
    const { pollMs, heartbeatMs, progressEveryMs, eventStreamSeconds } = rt.timing;
    const endAt = Date.now() + eventStreamSeconds * 1000;
    let cursor = start;
    let job = first;
    let lastWrite = Date.now();
    let lastProgress = 0;
    let positionAt = 0;
    let reasonCode: string | undefined;
    let sentPosition = false;
    const previewed = new Set<number>();
    const wake = new AbortController();
    stream.onAbort(() => wake.abort());

    await stream.write("retry: 2000\n\n");
    while (!stream.aborted) {
      job = await rt.settle(job);
      const out: OutEvent[] = [];
      const later = (id: string) => compareKeys(parseEventId(id)!, cursor) > 0;

      if (job.status === "queued" && Date.now() - positionAt >= Math.max(1000, pollMs)) {
        positionAt = Date.now();
        const insight = await rt.insight(job);
        const id = positionId(insight.queuePosition ?? 0);
        // A new waiting reason at the same position is news too, once this stream has told one.
        if (later(id) || (sentPosition && insight.waitingReason?.code !== reasonCode)) {
          sentPosition = true;
          reasonCode = insight.waitingReason?.code;
          out.push({
            event: "position",
            id,
            data: { position: insight.queuePosition, waiting_reason: insight.waitingReason, eta: insight.eta },
          });
        }
      }
      for (const t of [...job.stageTimings].sort((a, b) => a.stage - b.stage)) {
        if (later(stageId(t.stage))) {
          out.push({
            event: "stage",
            id: stageId(t.stage),
            data: {
              stage: t.stage,
              kind: t.kind,
              stages: job.plan.stages.length,
              started_at: t.startedAt,
              worker: t.worker,
            },
          });
        }
      }
      const p = job.progress;
      if (
        p &&
        p.step >= 1 &&
        later(progressId(p.stage, p.step)) &&
        (p.step === p.steps || Date.now() - lastProgress >= progressEveryMs)
      ) {
        lastProgress = Date.now();
        out.push({
          event: "progress",
          id: progressId(p.stage, p.step),
          data: { stage: p.stage, kind: p.stageKind, step: p.step, steps: p.steps },
        });
      }
      if (previews) {
        for (const t of job.stageTimings) {
          if (!t.finishedAt || previewed.has(t.stage) || job.plan.stages[t.stage]?.output !== "latents") continue;
          const preview = await latentPreview(deps.ports.blobs, blobKeys.latents(job.id, t.stage)).catch((e) => {
            deps.log?.("warn", { err: describeError(e), jobId: job.id }, "latents preview failed");
            return null;
          });
          // The worker records the hand-over and stores the latents at the same time: a blob not
          // there yet is looked for again at the next poll, while the render goes on.
          if (preview === undefined && !isTerminal(job.status)) continue;
          previewed.add(t.stage);
          if (preview) out.push({ event: "preview", data: preview });
        }
      }
      const ended = isTerminal(job.status);
      if (ended && later(END_ID)) out.push({ event: job.status, id: END_ID, data: await rt.view(c, job) });

      // Ids go out in their order (one poll can see a stage start and an older step), previews
      // before the end; anything not after what was already sent is dropped, so nothing repeats.
      const keyed = out.filter((e) => e.id).sort((a, b) => compareKeys(parseEventId(a.id)!, parseEventId(b.id)!));
      const ordered = [
        ...keyed.filter((e) => e.id !== END_ID),
        ...out.filter((e) => !e.id),
        ...keyed.filter((e) => e.id === END_ID),
      ];
      for (const e of ordered) {
        if (e.id && e.event !== "position" && !later(e.id)) continue;
        await stream.writeSSE({ event: e.event, id: e.id, data: JSON.stringify(e.data) });
        if (e.id) cursor = parseEventId(e.id);
        lastWrite = Date.now();
      }
      if (ended || Date.now() >= endAt) break;
      if (Date.now() - lastWrite >= heartbeatMs) {
        await stream.write(": keep-alive\n\n");
        lastWrite = Date.now();
      }
      await sleep(pollMs, wake.signal);
      const fresh = await deps.ports.jobs.get(job.id);
      if (!fresh) break;
      job = fresh;
    }
  }

  return app;
}
