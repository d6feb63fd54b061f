import { WebClient } from "@slack/web-api";

import { RetryLater } from "../channels/core/platform-fetch.js";
import type { SlackMessage, SlackWebApi } from "../channels/slack/client.js";

/**
 * The bot-token calls through Slack's own client, `@slack/web-api`: it knows the external upload
 * sequence (filesUploadV2 = files.getUploadURLExternal → POST the bytes → files.completeUploadExternal)
 * and honours Retry-After on 429s. Node-only (axios), so it is wired here at the edge of the API.
 */
export function slackWebApi(options: { token: string; apiUrl: string }): SlackWebApi {
  const client = new WebClient(options.token, {
    slackApiUrl: options.apiUrl,
    // A few quick retries in place; longer outages go back to the chat queue as RetryLater.
    retryConfig: { retries: 2, factor: 2, minTimeout: 200, maxTimeout: 2000 },
    rejectRateLimitedCalls: false,
  });
  const call = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (e) {
      const err = e as { code?: string; retryAfter?: number; data?: { error?: string } };
      if (err.code === "slack_webapi_rate_limited_error")
        throw new RetryLater(Math.max(1, err.retryAfter ?? 30) * 1000, `${what} rate limited`);
      if (err.code === "slack_webapi_request_error" || err.code === "slack_webapi_http_error")
        throw new RetryLater(10_000, `${what} failed: ${String(e)}`);
      throw e;
    }
  };
  return {
    async uploadImages({ channelId, comment, files }) {
      await call("files upload", () =>
        client.filesUploadV2({
          channel_id: channelId,
          initial_comment: comment,
          file_uploads: files.map((f) => ({ file: Buffer.from(f.bytes), filename: f.filename, title: f.title })),
        }),
      );
    },
    async postMessage(channelId: string, message: SlackMessage) {
      await call("chat.postMessage", () =>
        client.chat.postMessage({ channel: channelId, text: message.text, blocks: message.blocks as never }),
      );
    },
    async postEphemeral(channelId: string, userId: string, message: SlackMessage) {
      await call("chat.postEphemeral", () =>
        client.chat.postEphemeral({
          channel: channelId,
          user: userId,
          text: message.text,
          blocks: message.blocks as never,
        }),
      );
    },
  };
}
