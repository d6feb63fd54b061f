import { spawn } from "node:child_process";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

import { QUEUES } from "@kiln/shared";

import type { AwsStandins, openStandinPorts as OpenStandinPorts } from "../../../shared/test/support/aws-standins.js";

export type { AwsStandins };

/**
 * The AWS stand-ins (fauxqs for SQS + S3, dynalite for DynamoDB) on 127.0.0.1, in a process of their own, as
 * AWS's servers are elsewhere: in the bench's process they would share one event loop with the code measured,
 * serialising requests the runtime sends in parallel. fauxqs and dynalite are dev dependencies; the stand-ins
 * live with the tests. `stop()` ends the process.
 */
export async function startStandinsProcess(): Promise<AwsStandins> {
  const server = spawn(
    process.execPath,
    ["--import", "tsx", fileURLToPath(new URL("../../../shared/test/support/standins-server.ts", import.meta.url))],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise((resolve) => server.once("exit", resolve));
  const endpoints = await new Promise<Omit<AwsStandins, "stop">>((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`the stand-ins server exited (${code}) before listening`)));
    readline
      .createInterface({ input: server.stdout! })
      .once("line", (line) => resolve(JSON.parse(line) as Omit<AwsStandins, "stop">));
  });
  return { ...endpoints, stop: async () => void (server.kill("SIGTERM"), await exited) };
}

/** `openStandinPorts` (provision queues, bucket and table, open the AWS family), loaded only when a bench needs it. */
export async function openStandinPorts(...args: Parameters<typeof OpenStandinPorts>) {
  const support = await import("../../../shared/test/support/aws-standins.js");
  return support.openStandinPorts(...args);
}

/**
 * One isolated AWS namespace in running stand-ins — every queue Kiln uses (with DLQs), a bucket and a table, named
 * after `name` — with the ports open on it and the KILN_* settings that name the same namespace, so a config from
 * them describes the ports the API and worker are given.
 */
export async function openStandinNamespace(
  standins: AwsStandins,
  name: string,
  options: { maxReceives: number; visibilitySeconds: number },
) {
  const names = { bucket: `kiln-${name}`, table: `kiln-${name}`, queuePrefix: `${name}-` };
  const { ports } = await openStandinPorts(standins, { queues: QUEUES.map((q) => q.name), ...options, ...names });
  const env = {
    KILN_BACKEND: "aws",
    KILN_AWS_REGION: standins.region,
    KILN_SQS_ENDPOINT: standins.sqsEndpoint,
    KILN_S3_ENDPOINT: standins.s3Endpoint,
    KILN_DYNAMO_ENDPOINT: standins.dynamoEndpoint,
    KILN_BUCKET: names.bucket,
    KILN_TABLE: names.table,
    KILN_QUEUE_PREFIX: names.queuePrefix,
    KILN_MAX_RECEIVES: String(options.maxReceives),
    KILN_VISIBILITY_SECONDS: String(options.visibilitySeconds),
  };
  return { ports, env };
}
