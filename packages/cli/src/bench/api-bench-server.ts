/**
 * One HTTP server for `kiln bench api`, in its own process so the load generator does not share
 * its event loop: `kiln` = Kiln's API on the local family (no worker, jobs just queue), `bare` =
 * a bare Hono app answering `GET /` with JSON (and `POST /` by parsing the JSON body). Prints `{"port":…,"key":…}` once listening, and the
 * process's CPU time in µs (`{"cpu":…}`) for every `cpu` line on stdin.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";

import { createApp } from "@kiln/api";
import { apiDeps } from "@kiln/api/config";
import { serveOnNode } from "@kiln/api/node";
import { openPorts } from "@kiln/api/ports";
import { createApiKey, loadConfig } from "@kiln/shared";
import { Hono } from "hono";

const mode = process.argv[2];
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() !== "cpu") return;
  const { user, system } = process.cpuUsage();
  console.log(JSON.stringify({ cpu: user + system }));
});
if (mode === "bare") {
  const app = new Hono();
  app.get("/", (c) => c.json({ status: "ok", service: "bare" }));
  // What reading a JSON body costs on its own, for comparison with the GET.
  app.post("/", async (c) => c.json({ status: "ok", fields: Object.keys(await c.req.json()).length }, 202));
  const { port } = await serveOnNode(app as never, { port: 0, host: "127.0.0.1" });
  console.log(JSON.stringify({ port }));
} else {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-api-"));
  const config = loadConfig({ KILN_DATA_DIR: dir });
  const ports = openPorts(config);
  const { port } = await serveOnNode(createApp(apiDeps(config, ports)), { port: 0, host: "127.0.0.1" });
  const { key } = await createApiKey(ports.keys, { name: "bench", scopes: ["render"] });
  console.log(JSON.stringify({ port, key }));
  process.on("SIGTERM", () => {
    void ports.close().then(() => {
      fs.rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    });
  });
}
