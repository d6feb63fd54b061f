import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { loadConfig } from "@kiln/shared";
import autocannon from "autocannon";

import { fmt, table } from "./stats.js";

/**
 * Issue 5's figure: authenticated `POST /v1/renders` on the local family (key lookup + SHA-256,
 * zod validation, planning, the job row and the queue message in SQLite; no worker, so jobs
 * queue) against a bare Hono `GET` returning JSON, both at 50 connections in the same run, each
 * server in its own process. Target: ≥ 0.3 of bare Hono's throughput, p99 < 50 ms.
 */
const CONNECTIONS = 50;
/** Seconds per measured run (KILN_BENCH_SECONDS). */
const benchSeconds = (): number => loadConfig().bench.apiSeconds;

interface BenchServer {
  child: ChildProcess;
  port: number;
  key?: string;
  /** The server process's CPU time so far, µs. */
  cpu(): Promise<number>;
}

async function startServer(mode: "kiln" | "bare"): Promise<BenchServer> {
  const script = fileURLToPath(new URL("./api-bench-server.ts", import.meta.url));
  const child = spawn(process.execPath, ["--import", "tsx", script, mode], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, KILN_LOG_LEVEL: "silent" },
  });
  const lines = createInterface({ input: child.stdout! });
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`bench server (${mode}) exited with ${code}`));
      child.once("exit", onExit);
      lines.once("line", (line) => {
        child.off("exit", onExit);
        resolve(line);
      });
    });
  const ready = JSON.parse(await nextLine()) as { port: number; key?: string };
  return {
    child,
    ...ready,
    async cpu() {
      const line = nextLine();
      child.stdin!.write("cpu\n");
      return (JSON.parse(await line) as { cpu: number }).cpu;
    },
  };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

interface Measured {
  name: string;
  /** Server CPU time per request, µs: what the server spends, whoever else shares the machine. */
  cpuPerRequest: number;
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  non2xx: number;
  errors: number;
}

async function measure(name: string, server: BenchServer, options: autocannon.Options): Promise<Measured> {
  // A short warm-up lets the JIT and SQLite's page cache settle before the measured run.
  await autocannon({ ...options, duration: 2 });
  const cpu0 = await server.cpu();
  const r = await autocannon({ ...options, duration: benchSeconds() });
  const cpu = (await server.cpu()) - cpu0;
  return {
    name,
    cpuPerRequest: cpu / Math.max(1, r.requests.total),
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    requests: r.requests.total,
    non2xx: r.non2xx,
    errors: r.errors,
  };
}

const RENDER = JSON.stringify({
  prompt: "a lighthouse on a cliff at dusk, oil painting",
  mode: "ensemble",
  width: 1024,
  height: 1024,
  steps: 30,
});

export async function run(): Promise<string> {
  const bare = await startServer("bare");
  let bareGet: Measured;
  let barePost: Measured;
  try {
    bareGet = await measure("bare Hono `GET /` → JSON", bare, {
      url: `http://127.0.0.1:${bare.port}/`,
      connections: CONNECTIONS,
    });
    barePost = await measure("bare Hono `POST /`, parses the same JSON body", bare, {
      url: `http://127.0.0.1:${bare.port}/`,
      connections: CONNECTIONS,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: RENDER,
    });
  } finally {
    await stop(bare.child);
  }
  const kiln = await startServer("kiln");
  let kilnResult: Measured;
  try {
    kilnResult = await measure("Kiln `POST /v1/renders` (authenticated, local family)", kiln, {
      url: `http://127.0.0.1:${kiln.port}/v1/renders`,
      connections: CONNECTIONS,
      method: "POST",
      headers: { authorization: `Bearer ${kiln.key}`, "content-type": "application/json" },
      body: RENDER,
    });
  } finally {
    await stop(kiln.child);
  }
  const ratio = kilnResult.rps / bareGet.rps;
  const rows = [bareGet, barePost, kilnResult].map((m) => [
    m.name,
    fmt(m.rps, 0),
    fmt(m.p50, 1),
    fmt(m.p99, 1),
    fmt(m.cpuPerRequest, 0),
    m.requests,
    m.non2xx,
    m.errors,
  ]);
  return [
    `${CONNECTIONS} connections, ${benchSeconds()} s each after a 2 s warm-up (autocannon), servers in separate processes; server CPU is the server process's user + system time per request.`,
    "",
    table(["endpoint", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "requests", "non-2xx", "errors"], rows),
    "",
    `Ratio Kiln / bare Hono GET: **${fmt(ratio, 2)}** (target ≥ 0.30); Kiln p99 ${fmt(kilnResult.p99, 1)} ms (target < 50 ms): ${ratio >= 0.3 && kilnResult.p99 < 50 ? "met" : "NOT met"}.`,
    `For scale: a bare Hono POST that only parses the body reaches ${fmt(barePost.rps / bareGet.rps, 2)} of the GET; Kiln reaches ${fmt(kilnResult.rps / barePost.rps, 2)} of that POST.`,
  ].join("\n");
}
