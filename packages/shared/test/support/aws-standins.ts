/**
 * Real-protocol stand-ins for AWS inside the test process, on loopback only:
 * fauxqs (SQS JSON protocol + S3 REST) and dynalite (DynamoDB on in-memory LevelDB).
 * `startAwsStandins` starts fresh, empty servers on ephemeral ports and creates nothing in them;
 * `openStandinPorts` provisions queues, bucket and table in them and opens the AWS family.
 */
import type { Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";

import { buildApp } from "fauxqs";

import {
  type AwsPortsOptions,
  createAwsClients,
  ensureBucket,
  ensureQueues,
  ensureTable,
  openAwsPorts,
} from "../../src/adapters/aws/index.js";
import type { Ports } from "../../src/ports/index.js";

interface DynaliteOptions {
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
}
// dynalite is CommonJS without type declarations; this is the part of its API we use.
const dynalite = createRequire(import.meta.url)("dynalite") as (options?: DynaliteOptions) => Server;

export interface AwsStandins {
  sqsEndpoint: string;
  s3Endpoint: string;
  dynamoEndpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
}

const HOST = "127.0.0.1";

// The SDK's notice that releases after January 2027 need Node 22 is known (FACTS.md); in test
// output it is noise.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

export async function startAwsStandins(): Promise<AwsStandins> {
  // buildApp rather than startFauxqs: the convenience starter always listens on 0.0.0.0.
  const fauxqs = buildApp({ logger: false });
  const fauxqsUrl = await fauxqs.listen({ host: HOST, port: 0 });

  // createTableMs 0: tables are ACTIVE at once instead of after dynalite's default 500 ms.
  const dynamo: Server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  try {
    await new Promise<void>((resolve, reject) => {
      dynamo.once("error", reject);
      dynamo.listen(0, HOST, () => resolve());
    });
  } catch (e) {
    await fauxqs.close();
    throw e;
  }
  const dynamoPort = (dynamo.address() as AddressInfo).port;

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= Promise.all([
      fauxqs.close(),
      new Promise<void>((resolve, reject) => {
        dynamo.close((err) => (err ? reject(err) : resolve()));
        // Keep-alive sockets from SDK clients would otherwise hold close() open.
        dynamo.closeAllConnections();
      }),
    ]).then(() => undefined);
    return stopped;
  };

  return {
    sqsEndpoint: fauxqsUrl,
    s3Endpoint: fauxqsUrl,
    dynamoEndpoint: `http://${HOST}:${dynamoPort}`,
    region: "us-east-1",
    credentials: { accessKeyId: "kiln-test", secretAccessKey: "kiln-test-secret" },
    stop,
  };
}

export interface StandinPortsOptions {
  /** Logical queue names; each gets `<name>-dlq` and a redrive policy. */
  queues: readonly string[];
  maxReceives: number;
  /** Default visibility of the created queues (receives always pass their own). */
  visibilitySeconds?: number;
  bucket?: string;
  table?: string;
  /** Lets several families share one set of stand-ins without seeing each other's queues. */
  queuePrefix?: string;
}

/**
 * Creates the queues (with DLQs), the bucket and the table in running stand-ins, then opens the
 * AWS family on them. Returns the options too, so a test can open more clients on the same data.
 */
export async function openStandinPorts(
  standins: AwsStandins,
  options: StandinPortsOptions,
): Promise<{ ports: Ports; options: AwsPortsOptions }> {
  const portsOptions: AwsPortsOptions = {
    region: standins.region,
    sqsEndpoint: standins.sqsEndpoint,
    s3Endpoint: standins.s3Endpoint,
    dynamoEndpoint: standins.dynamoEndpoint,
    credentials: standins.credentials,
    bucket: options.bucket ?? "kiln-test",
    table: options.table ?? "kiln-test",
    queuePrefix: options.queuePrefix,
    maxReceives: options.maxReceives,
  };
  const clients = createAwsClients(portsOptions);
  try {
    await ensureQueues(clients.sqs, options.queues, {
      maxReceives: options.maxReceives,
      visibilitySeconds: options.visibilitySeconds ?? 30,
      prefix: options.queuePrefix,
    });
    await ensureBucket(clients.s3, portsOptions.bucket);
    await ensureTable(clients.dynamo, portsOptions.table);
  } finally {
    clients.sqs.destroy();
    clients.s3.destroy();
    clients.dynamo.destroy();
  }
  return { ports: openAwsPorts(portsOptions), options: portsOptions };
}
