import type { BlobStore, DiscordOrigin, JobRecord } from "@kiln/shared";
import {
  type APIActionRowComponent,
  type APIButtonComponent,
  ButtonStyle,
  ComponentType,
  MessageFlags,
} from "discord-api-types/v10";

import { BUTTON_ACTIONS, BUTTON_LABELS, buttonId } from "../core/buttons.js";
import { captionText, failureText, progressText, queuedText } from "../core/captions.js";
import { DISCORD_TOKEN_MS } from "../core/deliveries.js";
import { type ChatImage, type ChatPresenter, resultLink } from "../core/presenter.js";
import { type DiscordClient, type DiscordFile, type DiscordMessageBody, isTokenExpired } from "./client.js";

/** Discord's default upload limit per file. */
const MAX_FILE_BYTES = 10 * 1024 * 1024;
/** Edits stop this long before the token's 15 minutes, so a slow call does not straddle the end. */
const TOKEN_MARGIN_MS = 30_000;

export function resultButtons(jobId: string): APIActionRowComponent<APIButtonComponent>[] {
  return [
    {
      type: ComponentType.ActionRow,
      components: BUTTON_ACTIONS.map((action) => ({
        type: ComponentType.Button,
        style: action === "reroll" ? ButtonStyle.Primary : ButtonStyle.Secondary,
        label: BUTTON_LABELS[action],
        custom_id: buttonId(action, jobId),
      })),
    },
  ];
}

/**
 * A slash command's job lives in its deferred reply (`@original`); a button's job in a follow-up
 * message whose id is kept beside the job's outputs (so a restarted dispatcher still edits it).
 * After the token's 15 minutes the result goes to the channel with the bot token, else the edit
 * made at 13 minutes has already linked the result page.
 */
export class DiscordPresenter implements ChatPresenter {
  constructor(
    private readonly client: DiscordClient,
    private readonly options: {
      blobs: BlobStore;
      publicUrl: string;
      now?: () => number;
      log: (level: "info" | "warn", obj: Record<string, unknown>, msg: string) => void;
    },
  ) {}

  private origin(job: JobRecord): DiscordOrigin {
    if (job.chat?.platform !== "discord") throw new Error(`${job.id} is not a Discord job`);
    return job.chat;
  }

  private tokenAlive(origin: DiscordOrigin): boolean {
    return (this.options.now ?? Date.now)() < origin.receivedAt + DISCORD_TOKEN_MS - TOKEN_MARGIN_MS;
  }

  async queued(job: JobRecord, position: number): Promise<void> {
    await this.show(job, { content: position > 0 ? queuedText(job, position) : progressText(job), components: [] });
  }

  async progress(job: JobRecord): Promise<void> {
    await this.show(job, { content: progressText(job), components: [] });
  }

  async expiring(job: JobRecord): Promise<void> {
    const content = this.client.hasBotToken
      ? `⏳ Still rendering — “${job.plan.prompt.slice(0, 100)}”. The result will be posted in this channel when it is done.`
      : `⏳ Still rendering — this message can no longer be updated after 15 minutes. The result will be at ${resultLink(this.options.publicUrl, job.id)}`;
    await this.show(job, { content, components: [] });
  }

  async ended(job: JobRecord, images: ChatImage[]): Promise<void> {
    const origin = this.origin(job);
    const { body, files } = this.resultMessage(job, images);
    if (this.tokenAlive(origin)) {
      try {
        await this.show(job, body, files, true);
        return;
      } catch (e) {
        if (!isTokenExpired(e)) throw e;
        this.options.log("info", { jobId: job.id }, "Discord interaction token lapsed; posting the result as the bot");
      }
    }
    if (!this.client.hasBotToken) {
      this.options.log(
        "warn",
        { jobId: job.id },
        "the job outlived its Discord interaction token and there is no KILN_DISCORD_BOT_TOKEN; its result is only at the linked page",
      );
      return;
    }
    await this.client.channelMessage(
      origin.channelId,
      { ...body, content: `<@${origin.userId}> ${body.content}`, allowed_mentions: { users: [origin.userId] } },
      files,
    );
  }

  private resultMessage(job: JobRecord, images: ChatImage[]): { body: DiscordMessageBody; files: DiscordFile[] } {
    if (job.status !== "succeeded")
      return { body: { content: failureText(job), components: [], attachments: [] }, files: [] };
    const attachable = images.filter((img) => img.bytes.length <= MAX_FILE_BYTES);
    const linked = images.filter((img) => img.bytes.length > MAX_FILE_BYTES);
    const links = linked.map((img) => `\n${img.url}`).join("");
    return {
      body: {
        content: `${captionText(job)}${links}`,
        attachments: attachable.map((img, i) => ({
          id: String(i),
          filename: img.filename,
        })) as DiscordMessageBody["attachments"],
        components: resultButtons(job.id),
      },
      files: attachable.map((img) => ({ filename: img.filename, contentType: img.contentType, bytes: img.bytes })),
    };
  }

  /** Edits the job's message while the token lives; without `strict`, a lapsed token is not an error. */
  private async show(
    job: JobRecord,
    body: DiscordMessageBody,
    files: DiscordFile[] = [],
    strict = false,
  ): Promise<void> {
    const origin = this.origin(job);
    if (!this.tokenAlive(origin)) return;
    try {
      if (origin.kind === "command") {
        await this.client.editInteractionMessage(origin.token, "@original", body, files);
        return;
      }
      const stored = await this.options.blobs.get(messageKey(job.id));
      if (stored) {
        await this.client.editInteractionMessage(origin.token, new TextDecoder().decode(stored), body, files);
        return;
      }
      const message = await this.client.followUp(origin.token, body, files);
      await this.options.blobs.put(messageKey(job.id), new TextEncoder().encode(message.id), { ifAbsent: true });
    } catch (e) {
      if (strict || !isTokenExpired(e)) throw e;
      this.options.log("info", { jobId: job.id }, "Discord interaction token lapsed; skipping the edit");
    }
  }
}

/** Kept under the job's prefix, so the retention sweep removes it with the outputs. */
export function messageKey(jobId: string): string {
  return `jobs/${jobId}/chat/discord-message`;
}

export const EPHEMERAL = MessageFlags.Ephemeral;
