import { platformFetch, type PlatformFetchOptions } from "../core/platform-fetch.js";

/** A Block Kit message as response_url and chat.postMessage take it. */
export interface SlackMessage {
  text: string;
  blocks?: unknown[];
  response_type?: "ephemeral" | "in_channel";
  replace_original?: boolean;
  delete_original?: boolean;
}

/**
 * The bot-token half of Slack: Web API methods Kiln calls. Implemented with `@slack/web-api`
 * (entry/slack-web-api.ts, Node) whose base URL is KILN_SLACK_API_URL; an edge host supplies its own.
 */
export interface SlackWebApi {
  /** files.getUploadURLExternal → upload → files.completeUploadExternal, shared to the channel. */
  uploadImages(input: {
    channelId: string;
    comment: string;
    files: { filename: string; title: string; bytes: Uint8Array }[];
  }): Promise<void>;
  postMessage(channelId: string, message: SlackMessage): Promise<void>;
  postEphemeral(channelId: string, userId: string, message: SlackMessage): Promise<void>;
}

/**
 * Posts to a slash command's or an action's `response_url` (no token: the URL is the credential),
 * through platformFetch so 429 Retry-After and 5xx are honoured as for Discord.
 */
export async function postToResponseUrl(
  url: string,
  message: SlackMessage,
  options: PlatformFetchOptions = {},
): Promise<void> {
  const { text } = await platformFetch(
    () =>
      new Request(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(message),
      }),
    options,
  );
  // response_url answers 200 with "ok" or a JSON error such as {"ok":false,"error":"expired_url"}.
  if (text && text.trim() !== "ok") {
    try {
      const parsed = JSON.parse(text) as { ok?: boolean; error?: string };
      if (parsed.ok === false) throw new Error(`response_url refused the message: ${parsed.error ?? text}`);
    } catch (e) {
      if (e instanceof SyntaxError) return;
      throw e;
    }
  }
}
