import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";

import { bundleApi } from "@kiln/api/bundles";
import { probeLambdaBundle } from "@kiln/api/lambda-probe";
import { createApiKey } from "@kiln/shared";

import { fmt, percentile, table } from "./stats.js";

const COLD_STARTS = 7;

/**
 * The API's Lambda bundle: its size (as built, and gzipped as in the deployment zip) and its cold
 * init, i.e. a fresh `node` importing the bundle and answering its first request (an authenticated
 * POST /v1/renders: DynamoDB reads and writes, one SQS send) against fauxqs and dynalite on
 * loopback. Excludes what Lambda adds before our code runs (sandbox, runtime bootstrap, zip fetch).
 */
export async function run(): Promise<string> {
  const { startAwsStandins, openStandinPorts } = await import("../../../shared/test/support/aws-standins.js");
  const standins = await startAwsStandins();
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-lambda-bench-"));
  try {
    const names = { bucket: "kiln-bench", table: "kiln-bench", queuePrefix: "bench-" };
    const { ports } = await openStandinPorts(standins, {
      queues: ["kiln-base", "kiln-refine", "kiln-webhooks"],
      maxReceives: 3,
      ...names,
    });
    const { key } = await createApiKey(ports.keys, { name: "bench", scopes: ["render"] });
    await ports.close();

    const buildStart = performance.now();
    const bundle = await bundleApi("lambda", outdir);
    const buildMs = performance.now() - buildStart;
    const gzipBytes = gzipSync(fs.readFileSync(bundle.file), { level: 9 }).byteLength;

    const env = {
      KILN_BACKEND: "aws",
      KILN_LOG_LEVEL: "silent",
      KILN_SQS_ENDPOINT: standins.sqsEndpoint,
      KILN_S3_ENDPOINT: standins.s3Endpoint,
      KILN_DYNAMO_ENDPOINT: standins.dynamoEndpoint,
      KILN_BUCKET: names.bucket,
      KILN_TABLE: names.table,
      KILN_QUEUE_PREFIX: names.queuePrefix,
      AWS_ACCESS_KEY_ID: standins.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: standins.credentials.secretAccessKey,
      AWS_REGION: standins.region,
    };
    const request = {
      method: "POST",
      path: "/v1/renders",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "a kiln at dusk", width: 1024, height: 1024 }),
    };
    const imports: number[] = [];
    const firsts: number[] = [];
    const seconds: number[] = [];
    for (let i = 0; i < COLD_STARTS; i++) {
      const r = await probeLambdaBundle(bundle.file, env, [request, request]);
      if (r.responses.some((x) => x.statusCode !== 202)) {
        throw new Error(`the bundle answered ${r.responses.map((x) => `${x.statusCode} ${x.body}`).join("; ")}`);
      }
      imports.push(r.importMs);
      firsts.push(r.responses[0]!.ms);
      seconds.push(r.responses[1]!.ms);
    }
    const totals = imports.map((x, i) => x + firsts[i]!);

    const output = Object.values(bundle.metafile.outputs)[0]!;
    const byPackage = new Map<string, number>();
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
      const name = m ? m[1]! : "kiln (packages/*)";
      byPackage.set(name, (byPackage.get(name) ?? 0) + bytesInOutput);
    }
    const top = [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, 6);

    const row = (name: string, xs: number[]) => [
      name,
      fmt(percentile(xs, 50), 0),
      fmt(Math.min(...xs), 0),
      fmt(Math.max(...xs), 0),
    ];
    return [
      table(
        ["bundle", "value"],
        [
          ["size (minified ESM, one file)", `${(bundle.bytes / 1024).toFixed(0)} KiB`],
          ["size gzipped (≈ deployment zip)", `${(gzipBytes / 1024).toFixed(0)} KiB`],
          ["esbuild time", `${fmt(buildMs, 0)} ms`],
          ["largest parts", top.map(([n, b]) => `${n} ${(b / 1024).toFixed(0)} KiB`).join(", ")],
        ],
      ),
      "",
      `Cold init, ${COLD_STARTS} fresh processes (ms; median, min, max); load average at the end ${fmt(os.loadavg()[0]!, 1)} on ${os.cpus().length} cores:`,
      "",
      table(
        ["phase", "median", "min", "max"],
        [
          row("import the bundle", imports),
          row("first request (POST /v1/renders)", firsts),
          row("cold init = import + first request", totals),
          row("second request (warm)", seconds),
        ],
      ),
    ].join("\n");
  } finally {
    await standins.stop();
    fs.rmSync(outdir, { recursive: true, force: true });
  }
}
