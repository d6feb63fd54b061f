/**
 * EventBridge Scheduler on loopback, speaking its REST-JSON protocol as the AWS SDK does:
 * `POST|PUT|GET|DELETE /schedules/{Name}` (group in the body, or `groupName` in the query), errors
 * as `x-amzn-ErrorType` + `{"Message"}` (409 ConflictException on a second create, 404
 * ResourceNotFoundException, 400 ValidationException). It checks what EventBridge checks that
 * matters here (six cron fields with one `?` of day-of-month/day-of-week, a time zone, a target
 * with a role) and computes fire times with croner from the expression it was given.
 */
import http from "node:http";

import { Cron } from "croner";

import { fromEventBridgeCron } from "../../packages/api/src/batches/eventbridge-cron.js";

export interface StoredSchedule {
  Name: string;
  GroupName: string;
  ScheduleExpression: string;
  ScheduleExpressionTimezone: string;
  State?: string;
  Description?: string;
  FlexibleTimeWindow: { Mode: string };
  Target: { Arn: string; RoleArn: string; Input?: string; RetryPolicy?: unknown };
}

export interface SchedulerStandIn {
  url: string;
  schedules: Map<string, StoredSchedule>;
  calls: { method: string; name: string }[];
  /** The next `count` fire times of a stored schedule after `from`, from its own expression and zone. */
  nextFires(group: string, name: string, from: Date, count: number): Date[];
  /** The schedule's Input with `<aws.scheduler.scheduled-time>` filled, as the target receives it. */
  inputAt(group: string, name: string, at: Date): unknown;
  failNext(status: number, type: string): void;
  close(): Promise<void>;
}

export async function startSchedulerStandIn(): Promise<SchedulerStandIn> {
  const schedules = new Map<string, StoredSchedule>();
  const calls: { method: string; name: string }[] = [];
  const faults: { status: number; type: string }[] = [];
  const key = (group: string, name: string) => `${group}/${name}`;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://standin");
      const reply = (status: number, body: unknown, type?: string) => {
        res
          .writeHead(status, { "content-type": "application/json", ...(type ? { "x-amzn-errortype": type } : {}) })
          .end(JSON.stringify(body));
      };
      const m = /^\/schedules\/([0-9a-zA-Z._-]{1,64})$/.exec(url.pathname);
      if (!m) return reply(404, { Message: "Unknown operation" }, "UnknownOperationException");
      const name = decodeURIComponent(m[1]!);
      const method = req.method ?? "GET";
      calls.push({ method, name });
      const fault = faults.shift();
      if (fault) return reply(fault.status, { Message: "injected" }, fault.type);
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as Partial<StoredSchedule>) : {};
      const group = body.GroupName ?? url.searchParams.get("groupName") ?? "default";
      const k = key(group, name);
      const invalid = (message: string) => reply(400, { Message: message }, "ValidationException");
      if (method === "POST" || method === "PUT") {
        if (method === "POST" && schedules.has(k))
          return reply(409, { Message: `Schedule ${name} already exists.` }, "ConflictException");
        if (method === "PUT" && !schedules.has(k))
          return reply(404, { Message: `Schedule ${name} does not exist.` }, "ResourceNotFoundException");
        const expr = body.ScheduleExpression ?? "";
        const fields = /^cron\((.+)\)$/.exec(expr)?.[1]?.split(" ");
        if (!fields || fields.length !== 6) return invalid(`Invalid Schedule Expression ${expr}.`);
        if ((fields[2] === "?") === (fields[4] === "?"))
          return invalid("Exactly one of day-of-month and day-of-week must be '?'.");
        if (!body.FlexibleTimeWindow?.Mode) return invalid("FlexibleTimeWindow is required.");
        if (!body.Target?.Arn || !body.Target.RoleArn) return invalid("Target Arn and RoleArn are required.");
        try {
          new Intl.DateTimeFormat("en", { timeZone: body.ScheduleExpressionTimezone ?? "UTC" });
          new Cron(fromEventBridgeCron(expr), { paused: true, timezone: body.ScheduleExpressionTimezone });
        } catch (e) {
          return invalid(`Invalid Schedule Expression ${expr}: ${(e as Error).message}`);
        }
        schedules.set(k, { ...(body as StoredSchedule), Name: name, GroupName: group });
        return reply(200, { ScheduleArn: `arn:aws:scheduler:us-east-1:123456789012:schedule/${group}/${name}` });
      }
      if (!schedules.has(k))
        return reply(404, { Message: `Schedule ${name} does not exist.` }, "ResourceNotFoundException");
      if (method === "DELETE") {
        schedules.delete(k);
        return reply(200, {});
      }
      return reply(200, schedules.get(k));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const get = (group: string, name: string) => {
    const s = schedules.get(key(group, name));
    if (!s) throw new Error(`no schedule ${group}/${name}`);
    return s;
  };
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    schedules,
    calls,
    nextFires(group, name, from, count) {
      const s = get(group, name);
      return new Cron(fromEventBridgeCron(s.ScheduleExpression), {
        paused: true,
        timezone: s.ScheduleExpressionTimezone,
      }).nextRuns(count, from);
    },
    inputAt(group, name, at) {
      const input = get(group, name).Target.Input ?? "{}";
      // EventBridge's scheduled-time has no milliseconds.
      return JSON.parse(input.replace("<aws.scheduler.scheduled-time>", at.toISOString().replace(".000Z", "Z")));
    },
    failNext(status, type) {
      faults.push({ status, type });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
