import { type JobEventType, randomId, WEBHOOK_QUEUE } from "@kiln/shared";

import type { WebhookDelivery } from "../outbound/webhooks/events.js";
import type { BatchDeps } from "./batch-service.js";
import type { BatchRun, RunCounts } from "./run-record.js";

/** What a chat channel is told when a run ends. */
export interface BatchChatMessage {
  text: string;
  runId: string;
  manifestId: string;
  status: BatchRun["status"];
  counts: RunCounts;
  /** A download link to the contact sheet, valid for KILN_DOWNLOAD_URL_SECONDS. */
  contactSheetUrl?: string;
}

/**
 * Posts a run's end to Slack or Discord through the bots' tokens. The chat channels implement it
 * (Slack `chat.postMessage`, Discord `POST /channels/{id}/messages`); the batch core only calls it.
 */
export interface BatchChatNotifier {
  post(target: { platform: "slack" | "discord"; channel: string }, message: BatchChatMessage): Promise<void>;
}

export function runEndText(run: BatchRun, contactSheetUrl?: string): string {
  const c = run.counts;
  return (
    `Batch ${run.manifestId} (${run.id}) ${run.status}: ${c.succeeded} succeeded, ${c.failed} failed, ${c.skipped} skipped of ${c.total}.` +
    (contactSheetUrl ? ` Contact sheet: ${contactSheetUrl}` : "")
  );
}

/**
 * Tells the manifest's `notify` targets that a run ended, once per run: the webhook goes through the
 * webhook queue (signed with the key's secret, retried by the dispatcher; its `webhook-id` derives
 * from the run so receivers drop repeats), chat through the notifier. A claim record makes a second
 * pump finishing the same run skip it.
 */
export async function notifyRunEnded(deps: BatchDeps, run: BatchRun): Promise<void> {
  const notify = run.manifest.notify;
  if (!notify) return;
  const at = deps.now?.() ?? new Date();
  const claim = await deps.ports.keys.putIdempotency(
    {
      id: `batch-notify:${run.ownerKeyId}:${run.id}`,
      fingerprint: run.id,
      state: "completed",
      token: randomId(8),
      lockedUntil: 0,
      expiresAt: Math.floor(at.getTime() / 1000) + 30 * 86_400,
      createdAt: at.toISOString(),
    },
    at.getTime(),
  );
  if (claim) return;
  const contactSheetUrl = run.contactSheetKey
    ? await deps.ports.blobs.downloadUrl(run.contactSheetKey, { expiresSeconds: deps.downloadUrlSeconds })
    : undefined;
  const text = runEndText(run, contactSheetUrl);
  if (notify.webhook) {
    const event: JobEventType =
      run.status === "succeeded" ? "succeeded" : run.status === "canceled" ? "canceled" : "failed";
    const delivery: WebhookDelivery = {
      v: 1,
      id: `msg_${run.id}_batch_ended`,
      keyId: run.ownerKeyId,
      jobId: run.id,
      url: notify.webhook.url,
      event,
      body: JSON.stringify({
        type: "batch.ended",
        timestamp: at.toISOString(),
        data: {
          id: run.id,
          manifest_id: run.manifestId,
          status: run.status,
          counts: run.counts,
          summary: run.summary,
          contact_sheet: contactSheetUrl ? { url: contactSheetUrl } : null,
        },
      }),
      firstAttemptAt: at.getTime(),
      attempt: 1,
    };
    await deps.ports.queue.send(WEBHOOK_QUEUE, delivery);
  }
  const chats: { platform: "slack" | "discord"; channel: string }[] = [];
  if (notify.slack) chats.push({ platform: "slack", channel: notify.slack.channel });
  if (notify.discord) chats.push({ platform: "discord", channel: notify.discord.channel_id });
  for (const target of chats) {
    if (!deps.chat) {
      deps.log?.(
        "warn",
        { runId: run.id, platform: target.platform },
        "no chat bot is configured; the run's chat notification was not sent",
      );
      continue;
    }
    try {
      await deps.chat.post(target, {
        text,
        runId: run.id,
        manifestId: run.manifestId,
        status: run.status,
        counts: run.counts,
        contactSheetUrl,
      });
    } catch (e) {
      deps.log?.("warn", { err: String(e), runId: run.id, platform: target.platform }, "chat notification failed");
    }
  }
}
