import type { SlackOrigin } from "@kiln/shared";
import { type Context, Hono } from "hono";

import type { ApiEnv } from "../../deps.js";
import { fail } from "../../http/problem.js";
import { webhookUrlRefusal } from "../../outbound/address-policy.js";
import type { ApiRuntime } from "../../runtime.js";
import { parseButtonId } from "../core/buttons.js";
import { infoText, NOT_AVAILABLE_YET, shortPrompt } from "../core/captions.js";
import { type ChatDeps, slackEnabled } from "../core/chat-deps.js";
import { chatOptionsToRequest, OPTION_HELP, parseCommandText, requestFromPlan, validate } from "../core/options.js";
import { firstSighting } from "../core/replay.js";
import { submitChatRender } from "../core/submit.js";
import { mrkdwn } from "./blocks.js";
import { postToResponseUrl } from "./client.js";
import { verifySlackRequest } from "./verify.js";

export const SLACK_HELP = [
  "*/kiln* renders a picture with Kiln (SDXL):",
  "`/kiln <prompt> [--negative …] [--mode base|ensemble|sdedit] [--size WxH] [--seed N] [--steps N]`",
  "e.g. `/kiln a lighthouse at dusk, oil painting --negative blurry --size 768x768 --steps 25`",
  ...OPTION_HELP.map((line) => `• ${line}`),
  "Buttons under a result: re-roll (new seed), variations, upscale, info.",
].join("\n");

const ephemeral = (text: string) => ({ response_type: "ephemeral" as const, text: text.slice(0, 3000) });

/**
 * `POST /integrations/slack/commands` and `/interactions`: Slack's form-encoded requests, signed
 * with the app's signing secret, checked over the raw bytes before they are parsed; each answered
 * within Slack's 3 s (progress and the result follow from the chat queue).
 */
export function slackRoutes(rt: ApiRuntime, chat: ChatDeps | undefined) {
  const app = new Hono<ApiEnv>().basePath("/integrations/slack");

  async function verified(c: Context): Promise<URLSearchParams> {
    if (!chat || !slackEnabled(chat.config))
      fail(404, "not_found", "The Slack bot is not configured on this Kiln server (KILN_SLACK_* unset).");
    const nowMs = rt.now().getTime();
    const result = await verifySlackRequest(c.req.raw, chat.config.slack.signingSecret!, nowMs);
    if (!result.ok) {
      rt.deps.log?.("info", { reason: result.reason }, "Slack request refused");
      fail(401, "invalid_signature", `The request is not signed by Slack: ${result.reason}.`);
    }
    if (!(await firstSighting(rt.deps.ports.keys, "slack", result.signature, nowMs))) {
      rt.deps.log?.("warn", {}, "Slack request replayed; refused");
      fail(401, "replayed", "This signed request was already received; a replay is refused.");
    }
    return new URLSearchParams(result.body);
  }

  function responseUrlRefusal(raw: string): string | null {
    try {
      return webhookUrlRefusal(new URL(raw), rt.deps.webhooks ?? { allowPrivate: false, allowedHosts: [] });
    } catch {
      return "response_url is not a URL";
    }
  }

  app.post("/commands", async (c) => {
    const form = await verified(c);
    const text = form.get("text") ?? "";
    if (/^\s*(help)?\s*$/i.test(text)) return c.json(ephemeral(SLACK_HELP));
    const responseUrl = form.get("response_url") ?? "";
    const refused = responseUrlRefusal(responseUrl);
    if (refused) {
      rt.deps.log?.("warn", { reason: refused }, "Slack response_url refused by the address policy");
      return c.json(ephemeral(`⚠️ This Kiln server cannot answer this workspace (${refused}).`));
    }
    const options = parseCommandText(text);
    if (!options.ok) return c.json(ephemeral(`⚠️ ${options.message} Type \`/kiln help\` for the options.`));
    const request = chatOptionsToRequest(options.value, rt.deps.limits);
    if (!request.ok) return c.json(ephemeral(`⚠️ ${request.message} Type \`/kiln help\` for the options.`));
    const origin: SlackOrigin = {
      platform: "slack",
      kind: "command",
      teamId: form.get("team_id") ?? "",
      channelId: form.get("channel_id") ?? "",
      userId: form.get("user_id") ?? "",
      responseUrl,
      receivedAt: rt.now().getTime(),
    };
    const result = await submitChatRender(rt, chat!, {
      request: request.value,
      origin,
      guildId: origin.teamId || undefined,
    });
    if (!result.ok) return c.json(ephemeral(`⚠️ ${result.message}`));
    return c.json(
      ephemeral(`⏳ Queued, position ${result.position} — “${shortPrompt(request.value.prompt)}” (${result.job.id})`),
    );
  });

  app.post("/interactions", async (c) => {
    const form = await verified(c);
    let payload: SlackActionPayload;
    try {
      payload = JSON.parse(form.get("payload") ?? "") as SlackActionPayload;
    } catch {
      fail(400, "invalid_body", "The interaction has no JSON payload field.");
    }
    if (payload.type !== "block_actions" || !payload.actions?.length) return c.body(null, 200);
    const responseUrl = payload.response_url ?? "";
    const refused = responseUrl ? responseUrlRefusal(responseUrl) : "no response_url";
    if (refused) {
      rt.deps.log?.("warn", { reason: refused }, "Slack response_url refused by the address policy");
      return c.body(null, 200);
    }
    const reply = async (text: string) => {
      try {
        await postToResponseUrl(
          responseUrl,
          { response_type: "ephemeral", replace_original: false, text: mrkdwn(text) },
          { attempts: 1, timeoutMs: 2000 },
        );
      } catch (e) {
        rt.deps.log?.("warn", { err: String(e) }, "Slack ephemeral reply failed");
      }
      return c.body(null, 200);
    };
    const button = parseButtonId(payload.actions[0]!.value ?? "");
    if (!button) return reply("This button is not Kiln's.");
    const source = await rt.deps.ports.jobs.get(button.jobId);
    if (!source?.chat)
      return reply("That render is gone (outputs are kept for a limited time); start a new one with /kiln.");
    const presser = payload.user?.id ?? "";
    if (!chat!.config.buttonsAnyone && presser !== source.chat.userId)
      return reply(`Only <@${source.chat.userId}>, who asked for this picture, can use its buttons.`);
    if (button.action === "info") return reply(infoText(source));
    if (button.action === "vary" || button.action === "upscale") return reply(NOT_AVAILABLE_YET);
    const request = validate(
      { ...requestFromPlan(source.plan), seed: crypto.getRandomValues(new Uint32Array(1))[0]! },
      rt.deps.limits,
    );
    if (!request.ok) return reply(`⚠️ ${request.message}`);
    const origin: SlackOrigin = {
      platform: "slack",
      kind: "action",
      teamId: payload.team?.id ?? "",
      channelId: payload.channel?.id ?? source.chat.channelId,
      userId: presser,
      responseUrl,
      receivedAt: rt.now().getTime(),
      sourceJobId: source.id,
    };
    const result = await submitChatRender(rt, chat!, {
      request: request.value,
      origin,
      guildId: origin.teamId || undefined,
    });
    if (!result.ok) return reply(`⚠️ ${result.message}`);
    return c.body(null, 200);
  });

  return app;
}

interface SlackActionPayload {
  type: string;
  user?: { id: string };
  team?: { id: string };
  channel?: { id: string };
  response_url?: string;
  actions?: { action_id: string; value?: string }[];
}
