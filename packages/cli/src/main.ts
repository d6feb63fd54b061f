import { isKilnError } from "@kiln/shared";

import { CliError, UsageError, wantsHelp } from "./cli/args.js";

interface Command {
  summary: string;
  /** Printed by `kiln <command> --help`; the first line is the synopsis. Absent: the command prints its own. */
  usage?: string;
  load: () => Promise<{ run(argv: string[]): Promise<void> }>;
}

const COMMANDS: Record<string, Command> = {
  start: {
    summary: "run the API and one worker on the embedded default (renders a demo image first)",
    usage:
      "usage: kiln start\n\nRuns the API and one worker in one process, renders a demo image (KILN_START_DEMO=false to skip),\nand prints a local API key. Configuration: KILN_* environment variables (README.md).",
    load: () => import("./commands/start.js"),
  },
  api: {
    summary: "run the HTTP API alone",
    usage: "usage: kiln api\n\nRuns the HTTP API alone on KILN_HOST:PORT. Configuration: KILN_* environment variables.",
    load: () => import("./commands/api.js"),
  },
  worker: {
    summary: "run a worker alone (several may share one data dir)",
    usage:
      "usage: kiln worker\n\nRuns one worker (stages KILN_STAGES) and the webhook sender. Configuration: KILN_* environment variables.",
    load: () => import("./commands/worker.js"),
  },
  keys: {
    summary: "create, list or revoke API keys",
    usage: [
      "usage: kiln keys create --name NAME [--scopes render,admin] [--rps N] [--burst N] [--concurrent-jobs N] [--images-per-day N]",
      "       kiln keys list [--json]",
      "       kiln keys revoke KEY_ID",
      "       kiln keys webhook-secret KEY_ID",
      "",
      "`create` prints the key alone on the last line of stdout (KEY=$(npx kiln keys create --name me)).",
    ].join("\n"),
    load: () => import("./commands/keys.js"),
  },
  models: {
    summary: "write Kiln's generated models (`kiln models reference|tiny --out DIR`)",
    usage:
      "usage: kiln models reference [--out DIR]\n       kiln models tiny [--out DIR] [--seed N]\n\nWrites the reference SDXL base and refiner (exact denoiser of a shapes picture set), or the tiny random ones (byte-identical per seed).",
    load: () => import("./commands/models.js"),
  },
  dlq: {
    summary: "list or replay dead-lettered stage messages",
    usage: "usage: kiln dlq list [--kind base|refine]\n       kiln dlq replay --kind base|refine",
    load: () => import("./commands/dlq.js"),
  },
  render: {
    summary: "submit a render to a running Kiln and save the images",
    usage: [
      'usage: kiln render "a prompt" [--mode base|ensemble|sdedit] [--width W] [--height H] [--steps N] [--seed S]',
      "                   [--n N] [--scheduler NAME] [--format png|webp|jpeg] [--negative TEXT]",
      "                   [--out FILE] [--key KEY] [--url URL]",
      "",
      "  --key   API key (default: KILN_API_KEY)",
      "  --url   the Kiln to call (default: KILN_API_URL, else KILN_PUBLIC_URL, else http://127.0.0.1:8787)",
      "  --out   where to save the image (default render.png; several images get -0, -1, … suffixes)",
    ].join("\n"),
    load: () => import("./commands/render.js"),
  },
  simulate: {
    summary: "simulate a GPU fleet under an arrival trace and a scaling policy (docs/scaling.md)",
    // No usage here: `kiln simulate --help` prints its own.
    load: () => import("./commands/simulate.js"),
  },
  // Batches
  batch: {
    summary: "run a batch manifest, follow a run, list runs (`kiln batch run FILE --wait`)",
    load: () => import("./commands/batch.js"),
  },
  bench: {
    summary: "run Kiln's benchmarks and print the figures",
    usage:
      "usage: kiln bench [handoff|api|render|step-overhead|duty-cycle|batching|noise …]\n       kiln bench duty-cycle [--family local|aws] [--renders N]\n\nWithout names, runs them all (figures for docs/benchmarks.md).",
    load: () => import("./commands/bench.js"),
  },
  // TensorRT engines
  engines: {
    summary: "build TensorRT engines per GPU and size bucket, or list them (`kiln engines build --help`)",
    load: () => import("./commands/engines.js"),
  },
  // SDXL invisible watermark.
  watermark: {
    summary: "tell whether an image carries the SDXL invisible watermark (`kiln watermark detect FILE`)",
    usage:
      "usage: kiln watermark detect FILE [--json]\n\nReads FILE (PNG, JPEG, WebP) and looks for the SDXL watermark's 48-bit message (invisible-watermark's dwtDct).\nExit 0 found, 1 not found, 3 the file cannot be checked (not an image, or under 256×256 pixels).",
    load: () => import("./commands/watermark.js"),
  },
  // Chat channels.
  discord: {
    summary: "publish the Discord bot's commands (`kiln discord register-commands [--guild ID]`)",
    usage:
      "usage: kiln discord register-commands [--guild ID]\n\nPublishes /imagine (bulk overwrite) globally, or to one guild.",
    load: () => import("./commands/discord.js"),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    "Usage: kiln <command> [options]",
    "",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    "",
    "`kiln <command> --help` shows a command's options.",
    "Configuration comes from KILN_* environment variables (see README.md).",
  ].join("\n");
}

const [command, ...rest] = process.argv.slice(2);
if (!command || command === "help" || command === "--help" || command === "-h") {
  console.log(usage());
  process.exit(0);
}
const entry = COMMANDS[command];
if (!entry) {
  console.error(`kiln: unknown command "${command}".\n\n${usage()}`);
  process.exit(2);
}
// Asking for help never runs the command (start/api/worker would bind ports and create .kiln/).
if (entry.usage && wantsHelp(rest)) {
  console.log(entry.usage);
  process.exit(0);
}
try {
  await (await entry.load()).run(rest);
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`kiln ${command}: ${e.message} (see kiln ${command} --help)`);
    process.exit(2);
  }
  // Configuration, model and expected run-time errors are for a person: print the sentence, not a stack.
  if (isKilnError(e) || e instanceof CliError) {
    console.error(`kiln ${command}: ${e.message}`);
    process.exit(1);
  }
  console.error(e);
  process.exit(1);
}
