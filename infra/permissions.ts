/**
 * IAM statements (infra/plan/iam.ts, tested offline) in the form SST functions take. Functions are
 * not `link`ed to data resources: SST's links grant every action of a service (`sqs:*`, `s3:*`);
 * these grant only what each function calls. Resource names reach the code as KILN_* settings.
 */
import type { Statement } from "./plan/iam";
import { queueArns } from "./queues";
import { bucketArns } from "./storage";
import { table } from "./table";

export const dataArns = {
  queues: queueArns,
  ...bucketArns,
  table: table.arn,
  tableIndexes: $interpolate`${table.arn}/index/*`,
};

export const asSstPermissions = (statements: Statement<$util.Input<string>>[]) =>
  statements.map((s) => ({ actions: s.Action, resources: s.Resource }));
