/**
 * Where a chat-submitted render came from and where its progress and result go. Stored on the job
 * record, so whichever process sees the job's events (worker, API, a restarted dispatcher) can
 * deliver them without in-memory state. Never shown in the public render view.
 */
export type ChatOrigin = DiscordOrigin | SlackOrigin;

interface OriginBase {
  /** The chat user who asked; buttons answer this user only unless configured otherwise. */
  userId: string;
  channelId: string;
  /** Epoch ms the interaction or command arrived: its token or response_url ages from here. */
  receivedAt: number;
  /** The job whose button started this one (re-roll, variations, upscale). */
  sourceJobId?: string;
}

export interface DiscordOrigin extends OriginBase {
  platform: "discord";
  /** The interaction token: webhook follow-ups work with it for 15 minutes. */
  token: string;
  guildId?: string;
  /** A slash command edits its own deferred reply; a button press posts a follow-up. */
  kind: "command" | "component";
}

export interface SlackOrigin extends OriginBase {
  platform: "slack";
  teamId: string;
  /** Takes 5 posts within 30 minutes; later updates go through the bot token. */
  responseUrl: string;
  kind: "command" | "action";
}
