import { bucketId, LANES, loadConfig, queueForStage, replayDeadLetters } from "@kiln/shared";

import { parseFlags, UsageError } from "../cli/args.js";
import { openPorts } from "../stack.js";

/** `kiln dlq list [--kind base|refine]` and `kiln dlq replay --kind base|refine`. */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  if (action !== "list" && action !== "replay")
    throw new UsageError(action ? `unknown action "${action}"; use list or replay` : "say list or replay");
  const { values } = parseFlags(rest, { kind: { type: "string" } });
  const kinds = values.kind ? [values.kind] : ["base", "refine"];
  for (const k of kinds)
    if (k !== "base" && k !== "refine") throw new UsageError(`--kind must be base or refine, got ${k}`);
  const config = loadConfig();
  const ports = openPorts(config);
  // Resolution buckets, `lanes` routing: each bucket's queues have dead letters too.
  const routes = config.buckets.routing === "lanes" ? config.buckets.list.map(bucketId) : [];
  try {
    switch (action) {
      case "list":
        // Batch lanes: both lanes of each kind.
        for (const queue of (kinds as ("base" | "refine")[]).flatMap((k) =>
          LANES.flatMap((l) => [undefined, ...routes].map((r) => queueForStage(k, l, r))),
        )) {
          const letters = await ports.queue.peekDeadLetters(queue, { max: 100 });
          console.error(`${queue}: ${letters.length} dead letter(s)`);
          for (const m of letters)
            console.log(
              JSON.stringify({
                queue,
                id: m.id,
                receives: m.receiveCount,
                sentAt: new Date(m.sentAt).toISOString(),
                body: m.body,
              }),
            );
        }
        break;
      case "replay":
        if (!values.kind) throw new UsageError("replay needs --kind base|refine");
        {
          const { requeuedJobs, messages } = await replayDeadLetters(
            ports,
            values.kind as "base" | "refine",
            new Date(),
            routes,
          );
          console.error(`Re-drove ${messages} message(s); ${requeuedJobs.length} failed job(s) back to queued.`);
        }
        break;
      default:
        throw new UsageError("say list or replay");
    }
  } finally {
    await ports.close();
  }
}
