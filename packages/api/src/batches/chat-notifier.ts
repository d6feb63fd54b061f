import type { ChatConfig } from "@kiln/shared";

import type { DiscordClient } from "../channels/discord/client.js";
import { mrkdwn, sectionBlock } from "../channels/slack/blocks.js";
import type { SlackWebApi } from "../channels/slack/client.js";
import type { BatchChatMessage, BatchChatNotifier, ChatPlatform } from "./notify.js";

/**
 * Which bots can post a run's end on their own (no interaction to answer): both need their bot
 * token, since `chat.postMessage` and `POST /channels/{id}/messages` are bot-token calls. A
 * manifest naming another platform is refused at submit (see `checkNotifyTargets`).
 */
export function batchChatPlatforms(config: ChatConfig): ChatPlatform[] {
  const platforms: ChatPlatform[] = [];
  if (config.slack.botToken) platforms.push("slack");
  if (config.discord.botToken) platforms.push("discord");
  return platforms;
}

/** The counts as one line, the same on both platforms. */
function countsLine(m: BatchChatMessage): string {
  const c = m.counts;
  return `${c.succeeded} succeeded · ${c.failed} failed · ${c.skipped} skipped (made by an earlier run) · ${c.total} in all`;
}

const STATUS_MARK: Record<BatchChatMessage["status"], string> = {
  succeeded: "✅",
  failed: "⚠️",
  canceled: "⏹️",
  queued: "",
  running: "",
};

function links(m: BatchChatMessage): { label: string; url: string }[] {
  return [
    m.contactSheetUrl ? { label: "Contact sheet", url: m.contactSheetUrl } : undefined,
    m.galleryUrl ? { label: "Gallery", url: m.galleryUrl } : undefined,
    m.indexUrl ? { label: "index.json", url: m.indexUrl } : undefined,
  ].filter((l): l is { label: string; url: string } => l !== undefined);
}

/** Slack Block Kit: a headline, the counts, the links (signed, valid for KILN_DOWNLOAD_URL_SECONDS). */
export function slackRunMessage(m: BatchChatMessage): { text: string; blocks: unknown[] } {
  const head = `${STATUS_MARK[m.status]} **Batch ${m.manifestId}** ${m.status} — run \`${m.runId}\``.trim();
  const linkLine = links(m)
    .map((l) => `<${l.url}|${l.label}>`)
    .join(" · ");
  return {
    text: m.text,
    blocks: [
      sectionBlock(mrkdwn(head)),
      sectionBlock(countsLine(m)),
      ...(linkLine ? [{ type: "context", elements: [{ type: "mrkdwn", text: linkLine.slice(0, 3000) }] }] : []),
    ],
  };
}

/** Discord: the text as content (for notifications and search), an embed with counts and links. */
export function discordRunMessage(m: BatchChatMessage) {
  const colour = m.status === "succeeded" ? 0x2ecc71 : m.status === "canceled" ? 0x95a5a6 : 0xe67e22;
  return {
    content: m.text.slice(0, 2000),
    embeds: [
      {
        title: `Batch ${m.manifestId}: ${m.status}`.slice(0, 256),
        description: `Run \`${m.runId}\`\n${countsLine(m)}`,
        color: colour,
        ...(m.contactSheetUrl ? { url: m.contactSheetUrl } : {}),
        fields: links(m).map((l) => ({ name: l.label, value: `[open](${l.url})`, inline: true })),
      },
    ],
    // A run's end mentions no one, whatever a prompt or manifest id contains.
    allowed_mentions: { parse: [] },
  };
}

/**
 * Posts a run's end through the bots' existing clients: Discord through Kiln's DiscordClient (its
 * platformFetch retries 429 `retry_after` and 5xx), Slack through `@slack/web-api` (SlackWebApi,
 * which retries in place too). Either may be absent; `platforms` says which are present.
 */
export class ChatBatchNotifier implements BatchChatNotifier {
  readonly platforms: ChatPlatform[];

  constructor(private readonly clients: { discord?: DiscordClient; slack?: SlackWebApi }) {
    this.platforms = [
      ...(clients.slack ? (["slack"] as const) : []),
      ...(clients.discord?.hasBotToken ? (["discord"] as const) : []),
    ];
  }

  async post(target: { platform: ChatPlatform; channel: string }, message: BatchChatMessage): Promise<void> {
    if (target.platform === "slack") {
      if (!this.clients.slack) throw new Error("no Slack bot token is configured (KILN_SLACK_BOT_TOKEN)");
      await this.clients.slack.postMessage(target.channel, slackRunMessage(message));
      return;
    }
    if (!this.clients.discord?.hasBotToken)
      throw new Error("no Discord bot token is configured (KILN_DISCORD_BOT_TOKEN)");
    await this.clients.discord.channelMessage(target.channel, discordRunMessage(message));
  }
}
