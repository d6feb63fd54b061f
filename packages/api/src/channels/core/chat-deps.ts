import type { ChatConfig } from "@kiln/shared";

import type { ContentPolicy } from "./policy.js";

/** What the chat routes need beyond the API's own deps; absent on ApiDeps: every bot route is 404. */
export interface ChatDeps {
  config: ChatConfig;
  /** The NSFW / content hook; default: KILN_CHAT_BLOCKED_WORDS outside channels marked NSFW. */
  policy?: ContentPolicy;
}

export function discordEnabled(config: ChatConfig): boolean {
  return Boolean(config.keyId && config.discord.applicationId && config.discord.publicKey);
}

export function slackEnabled(config: ChatConfig): boolean {
  return Boolean(config.keyId && config.slack.signingSecret);
}

/** One line per bot for the start-up log: enabled, or why its routes answer 404. */
export function chatStatus(config: ChatConfig): { discord: string; slack: string } {
  const missing = (names: [string, unknown][]) =>
    names
      .filter(([, v]) => !v)
      .map(([n]) => n)
      .join(", ");
  const key: [string, unknown] = ["KILN_CHAT_KEY_ID", config.keyId];
  const discordMissing = missing([
    ["KILN_DISCORD_APPLICATION_ID", config.discord.applicationId],
    ["KILN_DISCORD_PUBLIC_KEY", config.discord.publicKey],
    key,
  ]);
  const slackMissing = missing([["KILN_SLACK_SIGNING_SECRET", config.slack.signingSecret], key]);
  return {
    discord: discordMissing
      ? `disabled (POST /integrations/discord answers 404): set ${discordMissing}`
      : `enabled at POST /integrations/discord${config.discord.botToken ? "" : " (no KILN_DISCORD_BOT_TOKEN: results of jobs outliving the 15-minute interaction token are linked, not posted)"}`,
    slack: slackMissing
      ? `disabled (POST /integrations/slack/* answers 404): set ${slackMissing}`
      : `enabled at POST /integrations/slack/commands and /integrations/slack/interactions${config.slack.botToken ? "" : " (no KILN_SLACK_BOT_TOKEN: images are shown from signed URLs, not uploaded)"}`,
  };
}
