import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";

import { startDiscordStandIn } from "../../../test/support/chat-platforms.js";

const bin = path.resolve(import.meta.dirname, "../bin/kiln.js");
const run = promisify(execFile);
const APP = "123456789012345678";
const BOT = "bot-token-for-cli";

/** The stand-in answers in this process, so the CLI runs as an asynchronous child. */
async function kiln(args: string[], env: Record<string, string>) {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], {
      env: { ...process.env, KILN_LOG_LEVEL: "silent", ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe("kiln discord register-commands", () => {
  let discord: Awaited<ReturnType<typeof startDiscordStandIn>>;
  before(async () => {
    discord = await startDiscordStandIn({ applicationId: APP, botToken: BOT });
  });
  after(() => discord.close());
  const env = () => ({
    KILN_DISCORD_APPLICATION_ID: APP,
    KILN_DISCORD_BOT_TOKEN: BOT,
    KILN_DISCORD_API_URL: discord.url,
  });

  it("bulk-overwrites /imagine globally and in one guild with the bot token", async () => {
    const global = await kiln(["discord", "register-commands"], env());
    assert.equal(global.code, 0, global.stderr);
    const guild = await kiln(["discord", "register-commands", "--guild", "998877665544"], env());
    assert.equal(guild.code, 0, guild.stderr);
    const puts = discord.calls.filter((c) => c.method === "PUT" && c.status === 200);
    assert.deepEqual(
      puts.map((c) => c.path),
      [`/applications/${APP}/commands`, `/applications/${APP}/guilds/998877665544/commands`],
    );
    const [imagine] = puts[0]!.json as { name: string; options: { name: string; required?: boolean }[] }[];
    assert.equal(imagine!.name, "imagine");
    assert.deepEqual(
      imagine!.options.map((o) => o.name),
      ["prompt", "negative", "mode", "size", "seed", "steps"],
    );
    assert.match(guild.stdout, /guild 998877665544/);
  });

  it("says which variable is missing", async () => {
    const r = await kiln(["discord", "register-commands"], {
      KILN_DISCORD_API_URL: discord.url,
      KILN_DISCORD_APPLICATION_ID: APP,
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KILN_DISCORD_BOT_TOKEN/);
  });
});
