import { parseArgs } from "node:util";

import { loadConfig, queueForStage, replayDeadLetters } from "@kiln/shared";

import { openPorts } from "../stack.js";

/** `kiln dlq list [--kind base|refine]` and `kiln dlq replay --kind base|refine`. */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: { kind: { type: "string" } } });
  const kinds = values.kind ? [values.kind] : ["base", "refine"];
  for (const k of kinds) if (k !== "base" && k !== "refine") throw new Error(`--kind must be base or refine, got ${k}`);
  const ports = openPorts(loadConfig());
  try {
    switch (action) {
      case "list":
        for (const kind of kinds as ("base" | "refine")[]) {
          const letters = await ports.queue.peekDeadLetters(queueForStage(kind), { max: 100 });
          console.error(`${queueForStage(kind)}: ${letters.length} dead letter(s)`);
          for (const m of letters)
            console.log(
              JSON.stringify({
                queue: queueForStage(kind),
                id: m.id,
                receives: m.receiveCount,
                sentAt: new Date(m.sentAt).toISOString(),
                body: m.body,
              }),
            );
        }
        break;
      case "replay":
        if (!values.kind) throw new Error("kiln dlq replay needs --kind base|refine");
        {
          const { requeuedJobs, messages } = await replayDeadLetters(ports, values.kind as "base" | "refine");
          console.error(`Re-drove ${messages} message(s); ${requeuedJobs.length} failed job(s) back to queued.`);
        }
        break;
      default:
        throw new Error("usage: kiln dlq list [--kind base|refine] | kiln dlq replay --kind base|refine");
    }
  } finally {
    await ports.close();
  }
}
