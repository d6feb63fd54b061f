import { parseArgs } from "node:util";

import { DISCORD_COMMANDS, discordClientFromConfig } from "@kiln/api/chat";
import { KilnError, loadConfig } from "@kiln/shared";

/**
 * `kiln discord register-commands [--guild ID]`: publishes /imagine with Discord's bulk overwrite
 * (PUT, so commands Kiln no longer defines disappear). Guild commands appear at once; global ones
 * may take up to an hour to reach every client.
 */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: { guild: { type: "string" } } });
  if (action !== "register-commands")
    throw new KilnError("usage", "usage: kiln discord register-commands [--guild ID]");
  const config = loadConfig();
  const missing = [
    ["KILN_DISCORD_APPLICATION_ID", config.chat.discord.applicationId],
    ["KILN_DISCORD_BOT_TOKEN", config.chat.discord.botToken],
  ]
    .filter(([, v]) => !v)
    .map(([n]) => n);
  if (missing.length) throw new KilnError("config_invalid", `registering commands needs ${missing.join(" and ")}.`);
  if (values.guild !== undefined && !/^\d{5,25}$/.test(values.guild))
    throw new KilnError("usage", `--guild must be a numeric guild id, got "${values.guild}".`);
  const result = await discordClientFromConfig(config).putCommands(DISCORD_COMMANDS, values.guild);
  const where = values.guild ? `guild ${values.guild}` : "every guild (global; may take up to an hour to appear)";
  console.log(
    `Registered ${Array.isArray(result) ? result.length : DISCORD_COMMANDS.length} command(s) in ${where}: /imagine`,
  );
}
