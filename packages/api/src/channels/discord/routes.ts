import type { DiscordOrigin } from "@kiln/shared";
import {
  type APIApplicationCommandInteraction,
  type APIChatInputApplicationCommandInteraction,
  type APIInteraction,
  type APIInteractionResponse,
  type APIMessageComponentInteraction,
  InteractionResponseType,
  InteractionType,
  MessageFlags,
} from "discord-api-types/v10";
import { Hono } from "hono";

import type { ApiEnv } from "../../deps.js";
import { fail } from "../../http/problem.js";
import type { ApiRuntime } from "../../runtime.js";
import { parseButtonId } from "../core/buttons.js";
import { infoText, NOT_AVAILABLE_YET } from "../core/captions.js";
import { type ChatDeps, discordEnabled } from "../core/chat-deps.js";
import { type ChatOptions, chatOptionsToRequest, requestFromPlan, validate } from "../core/options.js";
import { firstSighting } from "../core/replay.js";
import { submitChatRender } from "../core/submit.js";
import { verifyDiscordRequest } from "./verify.js";

const ephemeral = (content: string): APIInteractionResponse => ({
  type: InteractionResponseType.ChannelMessageWithSource,
  data: { content: content.slice(0, 2000), flags: MessageFlags.Ephemeral, allowed_mentions: { parse: [] } },
});

/**
 * `POST /integrations/discord`: Discord's HTTP interactions. The signature is checked over the raw
 * bytes before anything parses them; the answer goes back within Discord's 3 s (a deferred reply:
 * the job's progress and images follow from the chat queue).
 */
export function discordRoutes(rt: ApiRuntime, chat: ChatDeps | undefined) {
  const app = new Hono<ApiEnv>().basePath("/integrations/discord");
  app.post("/", async (c) => {
    if (!chat || !discordEnabled(chat.config))
      fail(404, "not_found", "The Discord bot is not configured on this Kiln server (KILN_DISCORD_* unset).");
    const config = chat.config;
    const nowMs = rt.now().getTime();
    const verified = await verifyDiscordRequest(c.req.raw, config.discord.publicKey!, nowMs);
    if (!verified.ok) {
      rt.deps.log?.("info", { reason: verified.reason }, "Discord request refused");
      fail(401, "invalid_signature", `The request is not signed by Discord: ${verified.reason}.`);
    }
    if (!(await firstSighting(rt.deps.ports.keys, "discord", verified.signature, nowMs))) {
      rt.deps.log?.("warn", {}, "Discord request replayed; refused");
      fail(401, "replayed", "This signed request was already received; a replay is refused.");
    }
    let interaction: APIInteraction;
    try {
      interaction = JSON.parse(verified.body) as APIInteraction;
    } catch {
      fail(400, "invalid_body", "The interaction is not JSON.");
    }
    switch (interaction.type) {
      case InteractionType.Ping:
        return c.json({ type: InteractionResponseType.Pong });
      case InteractionType.ApplicationCommand:
        return c.json(await onCommand(rt, chat, interaction, nowMs));
      case InteractionType.MessageComponent:
        return c.json(await onButton(rt, chat, interaction, nowMs));
      default:
        return c.json(ephemeral("Kiln does not handle this kind of interaction."));
    }
  });
  return app;
}

function origin(interaction: APIInteraction, nowMs: number, kind: DiscordOrigin["kind"]): DiscordOrigin {
  return {
    platform: "discord",
    kind,
    token: interaction.token,
    userId: interaction.member?.user.id ?? interaction.user?.id ?? "unknown",
    channelId: interaction.channel?.id ?? (interaction as { channel_id?: string }).channel_id ?? "",
    ...(interaction.guild_id ? { guildId: interaction.guild_id } : {}),
    receivedAt: nowMs,
  };
}

function channelNsfw(interaction: APIInteraction): boolean {
  return Boolean((interaction.channel as { nsfw?: boolean } | undefined)?.nsfw);
}

async function onCommand(
  rt: ApiRuntime,
  chat: ChatDeps,
  interaction: APIApplicationCommandInteraction,
  nowMs: number,
): Promise<APIInteractionResponse> {
  if (interaction.data.name !== "imagine")
    return ephemeral(`Kiln has no /${interaction.data.name} command; use /imagine.`);
  const options: ChatOptions = {};
  for (const option of (interaction as APIChatInputApplicationCommandInteraction).data.options ?? []) {
    if ("value" in option) (options as Record<string, unknown>)[option.name] = option.value;
  }
  const parsed = chatOptionsToRequest(options, rt.deps.limits);
  if (!parsed.ok) return ephemeral(`⚠️ ${parsed.message} Type /imagine to see the options.`);
  const result = await submitChatRender(rt, chat, {
    request: parsed.value,
    origin: origin(interaction, nowMs, "command"),
    guildId: interaction.guild_id,
    channelNsfw: channelNsfw(interaction),
  });
  if (!result.ok) return ephemeral(`⚠️ ${result.message}`);
  return { type: InteractionResponseType.DeferredChannelMessageWithSource };
}

async function onButton(
  rt: ApiRuntime,
  chat: ChatDeps,
  interaction: APIMessageComponentInteraction,
  nowMs: number,
): Promise<APIInteractionResponse> {
  const button = parseButtonId(interaction.data.custom_id);
  if (!button) return ephemeral("This button is not Kiln's.");
  const source = await rt.deps.ports.jobs.get(button.jobId);
  if (!source?.chat)
    return ephemeral("That render is gone (outputs are kept for a limited time); start a new one with /imagine.");
  const presser = interaction.member?.user.id ?? interaction.user?.id;
  if (!chat.config.buttonsAnyone && presser !== source.chat.userId)
    return ephemeral(`Only <@${source.chat.userId}>, who asked for this picture, can use its buttons.`);
  if (button.action === "info") return ephemeral(infoText(source));
  if (button.action === "vary" || button.action === "upscale") return ephemeral(NOT_AVAILABLE_YET);
  const parsed = validate(
    { ...requestFromPlan(source.plan), seed: crypto.getRandomValues(new Uint32Array(1))[0]! },
    rt.deps.limits,
  );
  if (!parsed.ok) return ephemeral(`⚠️ ${parsed.message}`);
  const result = await submitChatRender(rt, chat, {
    request: parsed.value,
    origin: { ...origin(interaction, nowMs, "component"), sourceJobId: source.id },
    guildId: interaction.guild_id,
    channelNsfw: channelNsfw(interaction),
  });
  if (!result.ok) return ephemeral(`⚠️ ${result.message}`);
  return { type: InteractionResponseType.DeferredMessageUpdate };
}
