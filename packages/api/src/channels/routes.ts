import type { Hono } from "hono";
import type { ApiRuntime } from "../runtime.js";
import { resultRoutes } from "./core/result-route.js";
import { discordRoutes } from "./discord/routes.js";
import { slackRoutes } from "./slack/routes.js";

/**
 * The chat doors, each its own sub-app under `/integrations/*`: signature first, no API key, no
 * JSON-body rule (Slack posts forms). A bot whose secrets are unset answers 404.
 */
export function mountChannels(app: Hono<any>, rt: ApiRuntime): void {
  app.route("/integrations/discord", discordRoutes(rt, rt.deps.chat));
  app.route("/integrations/slack", slackRoutes(rt, rt.deps.chat));
  app.route("/integrations/results", resultRoutes(rt));
}
