/**
 * Least-privilege IAM statements for each of Kiln's functions and task roles. Pure and generic in
 * the ARN type (plain strings in tests, Pulumi outputs in infra/), so the tests check exactly the
 * statements that are deployed.
 */
export interface Statement<A = string> {
  Effect: "Allow";
  Action: string[];
  Resource: A[];
}

export interface DataArns<A = string> {
  /** ARNs of the queues this role touches (main queues and their DLQs). */
  queues: A[];
  bucket: A;
  /** `${bucket}/*`, passed in because building it needs the ARN type's interpolation. */
  bucketObjects: A;
  table: A;
  /** `${table}/index/*`. */
  tableIndexes: A;
}

const SQS_CONSUME = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"];
const SQS_PRODUCE = ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"];
const DDB_RW = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"];

/** The API (Lambda): reads and writes jobs and keys, sends stage 0 and webhook deliveries, presigns downloads. */
export function apiStatements<A>(d: DataArns<A>): Statement<A>[] {
  return [
    { Effect: "Allow", Action: SQS_PRODUCE, Resource: d.queues },
    { Effect: "Allow", Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], Resource: [d.bucketObjects] },
    { Effect: "Allow", Action: ["s3:ListBucket"], Resource: [d.bucket] },
    { Effect: "Allow", Action: [...DDB_RW, "dynamodb:BatchWriteItem"], Resource: [d.table, d.tableIndexes] },
  ];
}

/** A GPU worker task: consumes and produces stage messages, reads/writes latents and images, moves jobs. */
export function workerTaskStatements<A>(d: DataArns<A>): Statement<A>[] {
  return [
    { Effect: "Allow", Action: [...SQS_CONSUME, ...SQS_PRODUCE], Resource: d.queues },
    {
      Effect: "Allow",
      // PutObjectTagging: latents are written with their lifecycle tag.
      Action: ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject", "s3:AbortMultipartUpload"],
      Resource: [d.bucketObjects],
    },
    { Effect: "Allow", Action: ["s3:ListBucket"], Resource: [d.bucket] },
    { Effect: "Allow", Action: DDB_RW, Resource: [d.table, d.tableIndexes] },
  ];
}

/** The dead-letter sweep (cron): peeks DLQs, fails jobs, deletes swept letters. */
export function deadLetterSweepStatements<A>(d: DataArns<A>): Statement<A>[] {
  return [
    { Effect: "Allow", Action: [...SQS_CONSUME, ...SQS_PRODUCE], Resource: d.queues },
    { Effect: "Allow", Action: DDB_RW, Resource: [d.table, d.tableIndexes] },
  ];
}

/**
 * The outbox relay (DynamoDB Streams → function) of the crash-safe submit: reads the table's stream
 * and sends what each stored transition must cause. Wired in infra/outbox-relay.ts when that lands.
 */
export function outboxRelayStatements<A>(d: DataArns<A> & { tableStream: A }): Statement<A>[] {
  return [
    {
      Effect: "Allow",
      Action: ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
      Resource: [d.tableStream],
    },
    { Effect: "Allow", Action: SQS_PRODUCE, Resource: d.queues },
    { Effect: "Allow", Action: DDB_RW, Resource: [d.table, d.tableIndexes] },
  ];
}

/**
 * Batch schedules on EventBridge Scheduler: the API creates, updates and deletes schedules only in
 * Kiln's schedule group, and may hand the scheduler only its own invocation role.
 */
export function batchScheduleStatements<A>(s: { scheduleGroupSchedules: A; schedulerRole: A }): Statement<A>[] {
  return [
    {
      Effect: "Allow",
      Action: [
        "scheduler:CreateSchedule",
        "scheduler:UpdateSchedule",
        "scheduler:DeleteSchedule",
        "scheduler:GetSchedule",
      ],
      Resource: [s.scheduleGroupSchedules],
    },
    { Effect: "Allow", Action: ["iam:PassRole"], Resource: [s.schedulerRole] },
  ];
}

/** The role EventBridge Scheduler assumes for a manifest's schedules: invoke the batch trigger only. */
export function schedulerInvokeStatements<A>(s: { triggerFunction: A }): Statement<A>[] {
  return [{ Effect: "Allow", Action: ["lambda:InvokeFunction"], Resource: [s.triggerFunction] }];
}

/**
 * The batch trigger (fires, warm-ups, pumps): what the API may do with data, plus reading and
 * deleting the warm-up queue's messages (a fire clears its warm-up) and removing a schedule whose
 * manifest is gone (batchScheduleStatements).
 */
export function batchTriggerStatements<A>(d: DataArns<A> & { warmupQueue: A }): Statement<A>[] {
  return [
    ...apiStatements(d),
    {
      Effect: "Allow",
      Action: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
      Resource: [d.warmupQueue],
    },
  ];
}

const DATA_SERVICES = ["s3", "sqs", "dynamodb", "scheduler", "iam", "lambda"];

/**
 * Statements that grant too much on data: a `*` or `service:*` action, or a bare `*` resource.
 * Returns a sentence per problem; empty means least privilege as far as shape goes.
 */
export function overlyBroad<A>(statements: Statement<A>[], isWildcardResource: (a: A) => boolean): string[] {
  const problems: string[] = [];
  statements.forEach((st, i) => {
    for (const action of st.Action) {
      const [service, verb] = action.split(":");
      if (action === "*" || verb === undefined || verb.includes("*"))
        problems.push(`statement ${i}: action "${action}" is a wildcard`);
      else if (!DATA_SERVICES.includes(service!)) problems.push(`statement ${i}: unexpected service in "${action}"`);
    }
    if (st.Resource.length === 0) problems.push(`statement ${i}: no resource`);
    for (const r of st.Resource) if (isWildcardResource(r)) problems.push(`statement ${i}: resource "*"`);
  });
  return problems;
}
