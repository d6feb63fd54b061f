import type { JobRecord, KeyStore, SlackOrigin } from "@kiln/shared";

import { captionText, failureText, progressText, queuedText, shortPrompt } from "../core/captions.js";
import type { PlatformFetchOptions } from "../core/platform-fetch.js";
import type { ChatImage, ChatPresenter } from "../core/presenter.js";
import { actionsBlock, imageBlock, sectionBlock } from "./blocks.js";
import { postToResponseUrl, type SlackMessage, type SlackWebApi } from "./client.js";

/** Slack accepts 5 posts to a response_url within 30 minutes. */
export const RESPONSE_URL_USES = 5;
export const RESPONSE_URL_MS = 30 * 60_000;
/** Progress may use this many; the rest are kept for the result. */
const PROGRESS_USES = 3;

/**
 * Slack: progress replaces the ephemeral "queued" reply through response_url (within its 5 uses
 * and 30 minutes, counted in the KeyStore so restarts and other dispatchers agree); the result is
 * uploaded to the channel with the bot token (files.getUploadURLExternal → upload →
 * files.completeUploadExternal) and followed by the buttons, or, without a bot token, posted
 * through response_url as image blocks pointing at signed URLs.
 */
export class SlackPresenter implements ChatPresenter {
  constructor(
    private readonly options: {
      keys: KeyStore;
      web?: SlackWebApi;
      fetch?: PlatformFetchOptions;
      now?: () => number;
      log: (level: "info" | "warn", obj: Record<string, unknown>, msg: string) => void;
    },
  ) {}

  private origin(job: JobRecord): SlackOrigin {
    if (job.chat?.platform !== "slack") throw new Error(`${job.id} is not a Slack job`);
    return job.chat;
  }

  /** Takes one response_url use if fewer than `upTo` were taken and the URL is still young. */
  private async takeUse(job: JobRecord, upTo: number): Promise<boolean> {
    const origin = this.origin(job);
    if ((this.options.now ?? Date.now)() > origin.receivedAt + RESPONSE_URL_MS - 30_000) return false;
    const name = `chat:slack:response-url:${job.id}`;
    const expiresAt = Math.floor(origin.receivedAt / 1000) + 3600;
    if ((await this.options.keys.incrementCounter(name, 0, expiresAt)) >= upTo) return false;
    return (await this.options.keys.incrementCounter(name, 1, expiresAt)) <= upTo;
  }

  private post(job: JobRecord, message: SlackMessage): Promise<void> {
    return postToResponseUrl(this.origin(job).responseUrl, message, this.options.fetch);
  }

  async queued(job: JobRecord, position: number): Promise<void> {
    // A command's 3-second ack already said "queued"; a button press is acked silently, so say it now.
    if (this.origin(job).kind !== "action" || !(await this.takeUse(job, PROGRESS_USES))) return;
    await this.post(job, {
      response_type: "ephemeral",
      replace_original: false,
      text: position > 0 ? queuedText(job, position) : progressText(job),
    });
  }

  async progress(job: JobRecord): Promise<void> {
    // An action's response_url would replace the message with the buttons; only commands show progress.
    if (this.origin(job).kind !== "command" || !(await this.takeUse(job, PROGRESS_USES))) return;
    await this.post(job, { response_type: "ephemeral", replace_original: true, text: progressText(job) });
  }

  async expiring(): Promise<void> {}

  async ended(job: JobRecord, images: ChatImage[]): Promise<void> {
    const origin = this.origin(job);
    if (job.status !== "succeeded") {
      const text = failureText(job);
      if (await this.takeUse(job, RESPONSE_URL_USES))
        return this.post(job, { response_type: "ephemeral", replace_original: origin.kind === "command", text });
      if (this.options.web) return this.options.web.postEphemeral(origin.channelId, origin.userId, { text });
      this.options.log(
        "warn",
        { jobId: job.id },
        "a failed Slack render could not be reported: response_url used up and no bot token",
      );
      return;
    }
    const caption = captionText(job, `<@${origin.userId}>`);
    if (this.options.web) {
      await this.options.web.uploadImages({
        channelId: origin.channelId,
        comment: caption,
        files: images.map((img) => ({
          filename: img.filename,
          title: shortPrompt(job.plan.prompt, 80),
          bytes: img.bytes,
        })),
      });
      await this.options.web.postMessage(origin.channelId, {
        text: `Buttons for ${job.id}`,
        blocks: [actionsBlock(job.id)],
      });
      if (origin.kind === "command" && (await this.takeUse(job, RESPONSE_URL_USES)))
        await this.post(job, {
          response_type: "ephemeral",
          replace_original: true,
          text: "✅ Done — posted in the channel.",
        });
      return;
    }
    const message: SlackMessage = {
      response_type: "in_channel",
      replace_original: false,
      text: caption,
      blocks: [
        sectionBlock(caption),
        ...images.map((img) => imageBlock(img.url, shortPrompt(job.plan.prompt, 200))),
        actionsBlock(job.id),
      ],
    };
    if (await this.takeUse(job, RESPONSE_URL_USES)) return this.post(job, message);
    this.options.log(
      "warn",
      { jobId: job.id },
      "a Slack result could not be posted: its response_url is used up or older than 30 minutes and there is no KILN_SLACK_BOT_TOKEN",
    );
  }
}
