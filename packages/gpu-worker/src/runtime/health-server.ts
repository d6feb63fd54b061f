import http from "node:http";

import type { EngineSlotHealth } from "../engines/engine-sessions.js";
import type { Worker } from "./worker.js";

/** `GET /healthz` (models, providers, last poll, current jobs) and `GET /metrics` (Prometheus) for one worker. */
export function startHealthServer(
  worker: Worker,
  info: {
    models: Record<string, { dir: string; providers: string[]; tiny: boolean }>;
    /** TensorRT engine state per model role, part and bucket, and the provider each session really uses. */
    engines?: () => Record<string, EngineSlotHealth[]>;
  },
  port: number,
  host = "127.0.0.1",
) {
  const server = http.createServer(async (req, res) => {
    if (req.url === "/metrics") {
      res.writeHead(200, { "content-type": worker.metrics.registry.contentType });
      res.end(await worker.metrics.registry.metrics());
      return;
    }
    if (req.url === "/healthz") {
      const lastPoll = worker.status.lastPollAt ? Date.parse(worker.status.lastPollAt) : 0;
      const healthy =
        worker.status.state === "running" && !worker.status.lastPollError && Date.now() - lastPoll < 60_000;
      res.writeHead(healthy || worker.status.current.length > 0 ? 200 : 503, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ ...worker.status, models: info.models, ...(info.engines ? { engines: info.engines() } : {}) }),
      );
      return;
    }
    res.writeHead(404, { "content-type": "application/problem+json" });
    res.end(
      JSON.stringify({
        type: "about:blank",
        title: "Not Found",
        status: 404,
        code: "not_found",
        detail: "The worker serves GET /healthz and GET /metrics.",
      }),
    );
  });
  return new Promise<http.Server>((resolve) => server.listen(port, host, () => resolve(server)));
}
