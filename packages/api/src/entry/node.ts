import { createServer } from "node:http";

import type { ServerType } from "@hono/node-server";
import { getRequestListener } from "@hono/node-server";
import type { Ports } from "@kiln/shared";

import type { KilnApp } from "../app.js";
import { problem, PROBLEM_CONTENT_TYPE } from "../http/problem.js";
import { sweepExpiredJobs } from "../renders/retention.js";

/**
 * Serves the app on Node. Resolves once the socket listens, with the bound port (for port 0).
 *
 * Requests Node or the adapter refuse before the app sees them (a backslash in the path, a bad Host,
 * headers over Node's limit) get problem+json too, like every answer of the app itself.
 */
export function serveOnNode(
  app: KilnApp,
  options: { port: number; host: string },
): Promise<{ server: ServerType; port: number }> {
  return new Promise((resolve, reject) => {
    const listener = getRequestListener(app.fetch, {
      hostname: options.host,
      errorHandler: (e) =>
        problem(400, "bad_request", `The request could not be read: ${(e as Error).message}; fix the request line.`),
    });
    const server = createServer(listener);
    server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return socket.destroy();
      const [status, text, detail] =
        err.code === "HPE_HEADER_OVERFLOW"
          ? [
              431,
              "Request Header Fields Too Large",
              "The request headers are too large; send fewer or smaller headers.",
            ]
          : [400, "Bad Request", "The request could not be parsed as HTTP/1.1; fix the request."];
      const body = JSON.stringify({
        type: `https://kiln.dev/problems/${status === 431 ? "headers_too_large" : "bad_request"}`,
        title: text,
        status,
        detail,
        code: status === 431 ? "headers_too_large" : "bad_request",
      });
      socket.end(
        `HTTP/1.1 ${status} ${text}\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      const address = server.address();
      resolve({ server, port: typeof address === "object" && address ? address.port : options.port });
    });
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
