import { type ChatOrigin, type JobRecord, KilnError, type RenderRequest } from "@kiln/shared";

import type { SubmittedInputs } from "../../inputs/image-inputs.js";
import { LimitExceededError } from "../../quotas/limit-exceeded.js";
import { renderAdmission } from "../../renders/render-admission.js";
import { submitRender } from "../../renders/render-service.js";
import type { ApiRuntime } from "../../runtime.js";
import type { ChatDeps } from "./chat-deps.js";
import { formatWait, takeChatAllowance } from "./chat-limits.js";
import { DISCORD_EXPIRY_NOTICE_MS, enqueueChatDelivery } from "./deliveries.js";
import { wordListPolicy } from "./policy.js";

export type ChatSubmitResult = { ok: true; job: JobRecord; position: number } | { ok: false; message: string };

/**
 * A chat render through the API's own submit path: content policy, the user's and guild's chat
 * allowance, then `submitRender` with the chat key's admission (its quotas), then the first
 * follow-up queued. Every refusal is a sentence for an ephemeral reply.
 */
export async function submitChatRender(
  rt: ApiRuntime,
  chat: ChatDeps,
  input: {
    request: RenderRequest;
    origin: ChatOrigin;
    guildId?: string;
    channelNsfw?: boolean;
    /** Variations and upscale: the picture, already read and checked by `receiveInputs`. */
    inputs?: SubmittedInputs;
  },
): Promise<ChatSubmitResult> {
  const { deps } = rt;
  const { origin, request } = input;
  const log = (obj: Record<string, unknown>, msg: string) =>
    deps.log?.("info", { platform: origin.platform, userId: origin.userId, ...obj }, msg);
  const policy = chat.policy ?? wordListPolicy(chat.config.blockedWords);
  const refusal = await policy.check({
    platform: origin.platform,
    prompt: request.prompt,
    negativePrompt: request.negative_prompt,
    channelNsfw: input.channelNsfw ?? false,
    userId: origin.userId,
    guildId: input.guildId,
  });
  if (refusal) {
    log({ reason: refusal }, "chat render refused by the content policy");
    return { ok: false, message: refusal };
  }
  const key = chat.config.keyId ? await deps.ports.keys.get(chat.config.keyId) : null;
  if (!key || key.revokedAt) {
    deps.log?.("warn", { keyId: chat.config.keyId }, "KILN_CHAT_KEY_ID names no active API key; chat renders refused");
    return {
      ok: false,
      message:
        "This Kiln server's chat key is missing or revoked; ask its operator to set KILN_CHAT_KEY_ID to an active key.",
    };
  }
  const now = rt.now();
  const over = await takeChatAllowance(deps.ports.keys, {
    platform: origin.platform,
    userId: origin.userId,
    guildId: input.guildId,
    userPerHour: chat.config.userRendersPerHour,
    guildPerHour: chat.config.guildRendersPerHour,
    nowMs: now.getTime(),
  });
  if (over) {
    log({ guildId: input.guildId }, "chat render over the user's or guild's limit");
    return { ok: false, message: over };
  }
  let job: JobRecord;
  try {
    job = await submitRender(deps.ports, {
      ownerKeyId: key.id,
      request,
      admission: renderAdmission(key, deps),
      now,
      retentionHours: deps.retentionHours,
      chat: origin,
      inputs: input.inputs,
      limits: deps.limits,
      buckets: deps.limits.buckets,
    });
  } catch (e) {
    if (e instanceof LimitExceededError) {
      const seconds = Number(e.headers["retry-after"] ?? 5);
      log({ code: e.code }, "chat render over the chat key's quota");
      return {
        ok: false,
        message: `${e.message.replace(/^This API key/, "This server's Kiln key")} Try again in ${formatWait(seconds)}.`,
      };
    }
    if (e instanceof KilnError && e.status !== undefined && e.status < 500) return { ok: false, message: e.message };
    throw e;
  }
  deps.log?.("info", { jobId: job.id, platform: origin.platform, userId: origin.userId }, "chat render submitted");
  await enqueueChatDelivery(deps.ports.queue, { kind: "queued", jobId: job.id });
  if (origin.platform === "discord") {
    // Made by whoever holds the queue then, however many restarts later.
    await enqueueChatDelivery(deps.ports.queue, { kind: "expiring", jobId: job.id }, DISCORD_EXPIRY_NOTICE_MS / 1000);
  }
  const position = await deps.ports.jobs.countQueuedBefore(job);
  return { ok: true, job, position: position + 1 };
}
