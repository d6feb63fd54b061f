import type { KilnConfig, Ports } from "@kiln/shared";

import { ChatBatchNotifier } from "../batches/chat-notifier.js";
import { chatStatus, discordEnabled, slackEnabled } from "../channels/core/chat-deps.js";
import type { ChatDelivery } from "../channels/core/deliveries.js";
import { chatDispatcher } from "../channels/core/dispatcher.js";
import type { ChatPresenter } from "../channels/core/presenter.js";
import { DiscordClient } from "../channels/discord/client.js";
import { DiscordPresenter } from "../channels/discord/presenter.js";
import { SlackPresenter } from "../channels/slack/presenter.js";
import type { OutboundDispatcher, OutboundLogger } from "../outbound/dispatcher.js";
import { slackWebApi } from "./slack-web-api.js";

export { DISCORD_COMMANDS } from "../channels/discord/commands.js";

type Log = (level: "info" | "warn" | "error", obj: Record<string, unknown>, msg: string) => void;

/** Says at start-up which bots answer and, for a disabled one, which variables are missing. */
export function logChatStatus(config: KilnConfig, log: Log): void {
  const status = chatStatus(config.chat);
  log("info", { bot: "discord" }, `Discord bot ${status.discord}`);
  log("info", { bot: "slack" }, `Slack bot ${status.slack}`);
}

export function discordClientFromConfig(config: KilnConfig): DiscordClient {
  const d = config.chat.discord;
  return new DiscordClient({ apiUrl: d.apiUrl, applicationId: d.applicationId ?? "", botToken: d.botToken });
}

/**
 * The chat follow-up sender for the configured bots, or undefined when neither is enabled. Runs
 * beside the webhook dispatcher (`kiln start`, `kiln worker`); any number may share the queue.
 */
export function chatDispatcherFromConfig(
  config: KilnConfig,
  ports: Ports,
  logger: OutboundLogger,
): OutboundDispatcher<ChatDelivery> | undefined {
  const log: Log = (level, obj, msg) => logger[level](obj, msg);
  const presenters: Partial<Record<"discord" | "slack", ChatPresenter>> = {};
  if (discordEnabled(config.chat))
    presenters.discord = new DiscordPresenter(discordClientFromConfig(config), {
      blobs: ports.blobs,
      publicUrl: config.publicUrl,
      log,
    });
  if (slackEnabled(config.chat)) {
    const s = config.chat.slack;
    presenters.slack = new SlackPresenter({
      keys: ports.keys,
      web: s.botToken ? slackWebApi({ token: s.botToken, apiUrl: s.apiUrl }) : undefined,
      log,
    });
  }
  if (!presenters.discord && !presenters.slack) return undefined;
  return chatDispatcher({ ports, presenters, downloadUrlSeconds: config.downloadUrlSeconds, logger });
}

/**
 * Batch runs' end notices through the bots' tokens (Slack `chat.postMessage` via @slack/web-api,
 * Discord channel messages via DiscordClient), or undefined when neither bot token is set.
 */
export function batchChatNotifierFromConfig(config: KilnConfig): ChatBatchNotifier | undefined {
  const { slack, discord } = config.chat;
  if (!slack.botToken && !discord.botToken) return undefined;
  return new ChatBatchNotifier({
    slack: slack.botToken ? slackWebApi({ token: slack.botToken, apiUrl: slack.apiUrl }) : undefined,
    discord: discord.botToken ? discordClientFromConfig(config) : undefined,
  });
}
