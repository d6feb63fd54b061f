import { serve, type ServerType } from "@hono/node-server";
import type { Ports } from "@kiln/shared";

import type { KilnApp } from "../app.js";
import { sweepExpiredJobs } from "../renders/retention.js";

/** Serves the app on Node. Resolves once the socket listens, with the bound port (for port 0). */
export function serveOnNode(
  app: KilnApp,
  options: { port: number; host: string },
): Promise<{ server: ServerType; port: number }> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, port: options.port, hostname: options.host }, (info) =>
      resolve({ server, port: info.port }),
    );
    server.once("error", reject);
  });
}

export function closeServer(server: ServerType): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  });
}

/**
 * Runs the retention sweep every `intervalMs` in this process (the local family; on AWS,
 * DynamoDB TTL removes records and the bucket's lifecycle rule or a scheduled sweep removes blobs).
 */
export function startRetentionSweep(
  ports: Ports,
  options: {
    intervalMs?: number;
    log?: (level: "info" | "warn", obj: Record<string, unknown>, msg: string) => void;
  } = {},
): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const sweep = () => {
    running = sweepExpiredJobs(ports, { now: new Date() })
      .then(
        (r) =>
          r.deletedJobs.length &&
          options.log?.(
            "info",
            { jobs: r.deletedJobs.length, blobs: r.deletedBlobs },
            "retention sweep deleted expired outputs",
          ),
      )
      .catch((e) =>
        options.log?.("warn", { err: String(e) }, "retention sweep failed; it runs again at the next interval"),
      );
  };
  const timer = setInterval(sweep, options.intervalMs ?? 5 * 60_000);
  timer.unref();
  sweep();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
