import { serve, type ServerType } from "@hono/node-server";
import type { KilnApp } from "../app.js";

/** Serves the app on Node. Resolves once the socket listens, with the bound port (for port 0). */
export function serveOnNode(app: KilnApp, options: { port: number; host: string }): Promise<{ server: ServerType; port: number }> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, port: options.port, hostname: options.host }, (info) => resolve({ server, port: info.port }));
    server.once("error", reject);
  });
}

export function closeServer(server: ServerType): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  });
}
