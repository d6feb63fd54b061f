import { isKilnError } from "@kiln/shared";

const COMMANDS: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<void> }> }> = {
  start: {
    summary: "run the API and one worker on the embedded default (renders a demo image first)",
    load: () => import("./commands/start.js"),
  },
  api: { summary: "run the HTTP API alone", load: () => import("./commands/api.js") },
  worker: {
    summary: "run a worker alone (several may share one data dir)",
    load: () => import("./commands/worker.js"),
  },
  keys: { summary: "create, list or revoke API keys", load: () => import("./commands/keys.js") },
  models: {
    summary: "write Kiln's tiny test models (`kiln models tiny --out DIR`)",
    load: () => import("./commands/models.js"),
  },
  dlq: { summary: "list or replay dead-lettered stage messages", load: () => import("./commands/dlq.js") },
  render: {
    summary: "submit a render to a running Kiln and save the images",
    load: () => import("./commands/render.js"),
  },
  simulate: {
    summary: "simulate a GPU fleet under an arrival trace and a scaling policy (docs/scaling.md)",
    load: () => import("./commands/simulate.js"),
  },
  bench: { summary: "run Kiln's benchmarks and print the figures", load: () => import("./commands/bench.js") },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    "Usage: kiln <command> [options]",
    "",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    "",
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
try {
  await (await entry.load()).run(rest);
} catch (e) {
  // Configuration and model errors are for a person: print the sentence, not a stack.
  console.error(isKilnError(e) ? `kiln ${command}: ${e.message}` : e);
  process.exit(1);
}
