import type {
  APIMessage,
  RESTPatchAPIWebhookWithTokenMessageJSONBody,
  RESTPostAPIChannelMessageJSONBody,
  RESTPostAPIWebhookWithTokenJSONBody,
  RESTPutAPIApplicationCommandsJSONBody,
} from "discord-api-types/v10";

import { platformFetch, type PlatformFetchOptions, PlatformRefused } from "../core/platform-fetch.js";

export interface DiscordFile {
  filename: string;
  contentType: string;
  bytes: Uint8Array;
}

export type DiscordMessageBody = RESTPatchAPIWebhookWithTokenMessageJSONBody &
  RESTPostAPIWebhookWithTokenJSONBody &
  RESTPostAPIChannelMessageJSONBody;

/** Discord's "Invalid Webhook Token" / "Unknown Webhook": the interaction token has lapsed. */
export function isTokenExpired(e: unknown): boolean {
  if (!(e instanceof PlatformRefused)) return false;
  if (e.status === 401 || e.status === 404) {
    try {
      const code = (JSON.parse(e.body) as { code?: number }).code;
      return code === 50027 || code === 10015 || code === undefined;
    } catch {
      return true;
    }
  }
  return false;
}

/**
 * Kiln's one client for Discord's HTTP API: interaction webhooks (no bot token needed), channel
 * messages and command registration (bot token). Every call goes through platformFetch, which
 * honours 429 `retry_after` and backs off on 5xx. Web-standard (fetch, FormData, Blob).
 */
export class DiscordClient {
  constructor(
    private readonly options: {
      apiUrl: string;
      applicationId: string;
      botToken?: string;
    } & PlatformFetchOptions,
  ) {}

  get hasBotToken(): boolean {
    return Boolean(this.options.botToken);
  }

  /** Edits the deferred reply (`@original`) or a follow-up (`messageId`) of an interaction. */
  editInteractionMessage(token: string, messageId: string, body: DiscordMessageBody, files: DiscordFile[] = []) {
    return this.send<APIMessage>(
      "PATCH",
      `/webhooks/${this.options.applicationId}/${token}/messages/${messageId}`,
      body,
      files,
    );
  }

  /** A follow-up message of an interaction; `wait=true` so Discord returns it (its id is needed to edit it). */
  followUp(token: string, body: DiscordMessageBody, files: DiscordFile[] = []) {
    return this.send<APIMessage>("POST", `/webhooks/${this.options.applicationId}/${token}?wait=true`, body, files);
  }

  /** A message in a channel as the bot, for results that outlive the 15-minute interaction token. */
  channelMessage(channelId: string, body: DiscordMessageBody, files: DiscordFile[] = []) {
    return this.send<APIMessage>("POST", `/channels/${channelId}/messages`, body, files, true);
  }

  /** Bulk overwrite of the application's commands, globally or in one guild. */
  putCommands(commands: RESTPutAPIApplicationCommandsJSONBody, guildId?: string) {
    const app = this.options.applicationId;
    const path = guildId ? `/applications/${app}/guilds/${guildId}/commands` : `/applications/${app}/commands`;
    return this.send<unknown[]>("PUT", path, commands, [], true);
  }

  private async send<T>(method: string, path: string, body: unknown, files: DiscordFile[], bot = false): Promise<T> {
    if (bot && !this.options.botToken) throw new Error("this call needs KILN_DISCORD_BOT_TOKEN");
    const url = `${this.options.apiUrl.replace(/\/+$/, "")}${path}`;
    const headers: Record<string, string> = { "user-agent": "DiscordBot (https://github.com/kiln, 0.1)" };
    if (bot) headers.authorization = `Bot ${this.options.botToken}`;
    const build = () => {
      if (files.length === 0) {
        return new Request(url, {
          method,
          headers: { ...headers, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      }
      // Discord's multipart form: the JSON as payload_json, each file as files[n], referenced in attachments.
      const form = new FormData();
      form.append("payload_json", JSON.stringify(body));
      files.forEach((f, i) =>
        form.append(`files[${i}]`, new Blob([f.bytes as BlobPart], { type: f.contentType }), f.filename),
      );
      return new Request(url, { method, headers, body: form });
    };
    const { text } = await platformFetch(build, this.options);
    return (text ? JSON.parse(text) : undefined) as T;
  }
}
