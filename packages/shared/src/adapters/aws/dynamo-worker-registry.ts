/**
 * WorkerRegistry on DynamoDB: one item per worker in the `WORKERS` partition, overwritten by each
 * beat, with a TTL so workers that scaled in disappear by themselves. Workers coalesce their beats
 * (a few writes per minute each), so one partition carries a large fleet.
 */
import { type DynamoDBDocumentClient, paginateQuery, PutCommand } from "@aws-sdk/lib-dynamodb";

import type { WorkerBeat, WorkerRegistry } from "../../ports/worker-registry.js";
import type { StageKind } from "../../schemas/job.js";
import { isConditionalCheckFailed, TTL_ATTRIBUTE, workerBeatKey, WORKERS_PARTITION } from "./dynamo-table.js";

/** A beat item outlives its worker's last poll by this long before TTL may delete it. */
const BEAT_TTL_SECONDS = 24 * 3600;

export class DynamoWorkerRegistry implements WorkerRegistry {
  constructor(
    private readonly doc: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async heartbeat(beat: WorkerBeat): Promise<void> {
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            ...workerBeatKey(beat.workerId),
            workerId: beat.workerId,
            stages: beat.stages,
            lastPollAt: beat.lastPollAt,
            busy: beat.busy,
            [TTL_ATTRIBUTE]: Math.ceil(beat.lastPollAt / 1000) + BEAT_TTL_SECONDS,
          },
          // A late write from a slow request must not roll a newer beat back.
          ConditionExpression: "attribute_not_exists(pk) OR lastPollAt <= :at",
          ExpressionAttributeValues: { ":at": beat.lastPollAt },
        }),
      );
    } catch (e) {
      if (!isConditionalCheckFailed(e)) throw e;
    }
  }

  async list(sinceMs: number): Promise<WorkerBeat[]> {
    const beats: WorkerBeat[] = [];
    const pages = paginateQuery(
      { client: this.doc },
      {
        TableName: this.table,
        KeyConditionExpression: "pk = :workers",
        FilterExpression: "lastPollAt >= :since",
        ExpressionAttributeValues: { ":workers": WORKERS_PARTITION, ":since": sinceMs },
      },
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) {
        beats.push({
          workerId: String(item.workerId),
          stages: item.stages as StageKind[],
          lastPollAt: Number(item.lastPollAt),
          busy: Number(item.busy),
        });
      }
    }
    return beats.sort((a, b) => b.lastPollAt - a.lastPollAt);
  }
}
