import { type JobEventType, randomId, WEBHOOK_QUEUE } from "@kiln/shared";

import type { WebhookDelivery } from "../outbound/webhooks/events.js";
import type { BatchDeps } from "./batch-service.js";
import { type Locator, type Manifest, ManifestError, type ManifestIssue } from "./manifest.js";
import type { BatchRun, RunCounts } from "./run-record.js";

export type ChatPlatform = "slack" | "discord";

/** What a chat channel is told when a run ends. */
export interface BatchChatMessage {
  text: string;
  runId: string;
  manifestId: string;
  status: BatchRun["status"];
  counts: RunCounts;
  /** Download links (valid for KILN_DOWNLOAD_URL_SECONDS) to the contact sheet, index.json and index.html. */
  contactSheetUrl?: string;
  indexUrl?: string;
  galleryUrl?: string;
}

/**
 * Posts a run's end to Slack or Discord through the bots' tokens: ChatBatchNotifier
 * (chat-notifier.ts; Slack `chat.postMessage`, Discord `POST /channels/{id}/messages`). The batch
 * core only calls it.
 */
export interface BatchChatNotifier {
  /** The platforms it can post to. */
  readonly platforms: readonly ChatPlatform[];
  post(target: { platform: ChatPlatform; channel: string }, message: BatchChatMessage): Promise<void>;
}

export function runEndText(run: BatchRun, links: { contactSheetUrl?: string; indexUrl?: string } = {}): string {
  const c = run.counts;
  return (
    `Batch ${run.manifestId} (${run.id}) ${run.status}: ${c.succeeded} succeeded, ${c.failed} failed, ${c.skipped} skipped of ${c.total}.` +
    (links.contactSheetUrl ? ` Contact sheet: ${links.contactSheetUrl}` : "") +
    (links.indexUrl ? ` Index: ${links.indexUrl}` : "")
  );
}

const PLATFORM_SETTINGS: Record<ChatPlatform, { field: string; name: string; variable: string }> = {
  slack: { field: "slack", name: "Slack", variable: "KILN_SLACK_BOT_TOKEN" },
  discord: { field: "discord", name: "Discord", variable: "KILN_DISCORD_BOT_TOKEN" },
};

/**
 * Refuses, at submit, a manifest whose `notify` names a chat platform this Kiln has no bot for: a
 * run's end would otherwise go untold at 02:00 with only a log line. (A bot removed after a
 * manifest was stored is not an error at fire time: the run renders and the log says why no one
 * was told.)
 */
export function checkNotifyTargets(manifest: Manifest, platforms: readonly ChatPlatform[], locate?: Locator): void {
  const issues: ManifestIssue[] = [];
  for (const platform of ["slack", "discord"] as const) {
    if (!manifest.notify?.[platform] || platforms.includes(platform)) continue;
    const s = PLATFORM_SETTINGS[platform];
    issues.push({
      field: `$.notify.${s.field}`,
      message: `notify.${s.field} needs the ${s.name} bot, which is not configured on this Kiln: ask the operator to set ${s.variable} (the bot must be in the channel), or remove notify.${s.field}`,
      ...locate?.(["notify", s.field]),
    });
  }
  if (issues.length > 0) throw new ManifestError(issues);
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
  const url = (key?: string) =>
    key ? deps.ports.blobs.downloadUrl(key, { expiresSeconds: deps.downloadUrlSeconds }) : undefined;
  const [contactSheetUrl, indexUrl, galleryUrl] = await Promise.all([
    url(run.contactSheetKey),
    url(run.indexKey),
    url(run.galleryKey),
  ]);
  const text = runEndText(run, { contactSheetUrl, indexUrl });
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
          index: indexUrl ? { url: indexUrl } : null,
          gallery: galleryUrl ? { url: galleryUrl } : null,
        },
      }),
      firstAttemptAt: at.getTime(),
      attempt: 1,
    };
    await deps.ports.queue.send(WEBHOOK_QUEUE, delivery);
  }
  const chats: { platform: ChatPlatform; channel: string }[] = [];
  if (notify.slack) chats.push({ platform: "slack", channel: notify.slack.channel });
  if (notify.discord) chats.push({ platform: "discord", channel: notify.discord.channel_id });
  for (const target of chats) {
    if (!deps.chat?.platforms.includes(target.platform)) {
      deps.log?.(
        "warn",
        { runId: run.id, platform: target.platform },
        `no ${target.platform} bot is configured here; the run's chat notification was not sent`,
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
        indexUrl,
        galleryUrl,
      });
    } catch (e) {
      deps.log?.("warn", { err: String(e), runId: run.id, platform: target.platform }, "chat notification failed");
    }
  }
}
