/**
 * The AWS family of Kiln's ports: SQS queues, an S3 bucket and one DynamoDB table.
 * The same code talks to AWS or to real-protocol stand-ins (tests) via the endpoint options.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";

import type { KilnConfig } from "../../config.js";
import { KilnError } from "../../errors.js";
import type { Ports } from "../../ports/index.js";
import { DynamoJobStore } from "./dynamo-job-store.js";
import { DynamoKeyStore } from "./dynamo-key-store.js";
import { DynamoWorkerRegistry } from "./dynamo-worker-registry.js";
import { S3BlobStore } from "./s3-blob-store.js";
import { QueueUrlResolver, SqsQueue } from "./sqs-queue.js";

export { DynamoJobStore, type DynamoJobStoreOptions } from "./dynamo-job-store.js";
export { DynamoKeyStore, type DynamoKeyStoreOptions } from "./dynamo-key-store.js";
export { DynamoWorkerRegistry } from "./dynamo-worker-registry.js";
export {
  S3BlobStore,
  ensureBucket,
  MULTIPART_PART_SIZE,
  DEFAULT_MULTIPART_THRESHOLD,
  type S3BlobStoreOptions,
} from "./s3-blob-store.js";
export { SqsQueue, QueueUrlResolver, ensureQueues } from "./sqs-queue.js";
export * from "./dynamo-table.js";

export interface AwsPortsOptions {
  region: string;
  /** One endpoint for all three services (e.g. a stand-in); the per-service ones win over it. */
  endpoint?: string;
  sqsEndpoint?: string;
  s3Endpoint?: string;
  dynamoEndpoint?: string;
  /** Prepended to logical queue names (`kiln-base`) for GetQueueUrl, e.g. a stage name. */
  queuePrefix?: string;
  /** Logical queue name → URL; names found here skip GetQueueUrl. */
  queueUrls?: Record<string, string>;
  bucket: string;
  table: string;
  /** Omit to use the SDK's default chain (environment, instance role, …); the edge has no chain and passes them. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /**
   * Receives before a message is dead-lettered. SQS enforces it through the queues' RedrivePolicy
   * (set by SST or `ensureQueues`), so the adapters do not read it; it is part of the options so
   * both families are configured alike and dev setups can pass it on to `ensureQueues`.
   */
  maxReceives: number;
  /** Bodies above this many bytes go to S3 as multipart uploads. */
  multipartThreshold?: number;
  /** Epoch ms for `updatedAt` stamps and counter expiry; SQS and S3 keep their own time. */
  now?: () => number;
}

export interface AwsClients {
  sqs: SQSClient;
  s3: S3Client;
  dynamo: DynamoDBClient;
}

/** The three SDK clients as the ports use them; exposed for setup (`ensureQueues`, `ensureBucket`, `ensureTable`). */
export function createAwsClients(
  options: Pick<
    AwsPortsOptions,
    "region" | "endpoint" | "sqsEndpoint" | "s3Endpoint" | "dynamoEndpoint" | "credentials"
  >,
): AwsClients {
  const common = { region: options.region, ...(options.credentials ? { credentials: options.credentials } : {}) };
  const s3Endpoint = options.s3Endpoint ?? options.endpoint;
  return {
    // With an endpoint set, the SDK sends every call there rather than to the host in a QueueUrl
    // (fauxqs hands out `sqs.<region>.localhost` URLs, which do not resolve here).
    sqs: new SQSClient({ ...common, endpoint: options.sqsEndpoint ?? options.endpoint }),
    // Custom endpoints (stand-ins, S3-compatible stores) rarely resolve `<bucket>.host` names.
    s3: new S3Client({ ...common, endpoint: s3Endpoint, forcePathStyle: s3Endpoint !== undefined }),
    dynamo: new DynamoDBClient({ ...common, endpoint: options.dynamoEndpoint ?? options.endpoint }),
  };
}

/**
 * The AWS family's options from Kiln's configuration (KILN_* and SST links). Credentials come from
 * the SDK's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or the instance or
 * task role.
 */
export function awsPortsOptionsFromConfig(config: KilnConfig): AwsPortsOptions {
  const { aws } = config;
  if (!aws.bucket || !aws.table) {
    throw new KilnError(
      "config_invalid",
      "The AWS family needs a bucket and a table: set KILN_BUCKET and KILN_TABLE, or deploy with SST, which links them.",
    );
  }
  return {
    region: aws.region,
    endpoint: aws.endpoint,
    sqsEndpoint: aws.sqsEndpoint,
    s3Endpoint: aws.s3Endpoint,
    dynamoEndpoint: aws.dynamoEndpoint,
    queuePrefix: aws.queuePrefix,
    queueUrls: aws.queueUrls,
    bucket: aws.bucket,
    table: aws.table,
    maxReceives: config.maxReceives,
  };
}

export function openAwsPorts(options: AwsPortsOptions): Ports {
  const clients = createAwsClients(options);
  // Records carry optional fields as `undefined`; DynamoDB has no such value, so they are dropped.
  const doc = DynamoDBDocumentClient.from(clients.dynamo, { marshallOptions: { removeUndefinedValues: true } });
  return {
    queue: new SqsQueue(
      clients.sqs,
      new QueueUrlResolver(clients.sqs, { prefix: options.queuePrefix, urls: options.queueUrls }),
    ),
    blobs: new S3BlobStore(clients.s3, { bucket: options.bucket, multipartThreshold: options.multipartThreshold }),
    jobs: new DynamoJobStore(doc, options.table, { now: options.now }),
    keys: new DynamoKeyStore(doc, options.table, { now: options.now }),
    workers: new DynamoWorkerRegistry(doc, options.table),
    async close() {
      clients.sqs.destroy();
      clients.s3.destroy();
      doc.destroy();
      clients.dynamo.destroy();
    },
  };
}
export { type RangedObjectSource, s3ObjectSource } from "./s3-object-source.js";
