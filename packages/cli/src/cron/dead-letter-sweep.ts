import { failDeadLetteredJobs, loadConfig, reconcileQueuedJobs } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { createLogger } from "@kiln/shared/node";

/**
 * Lambda handler (infra/cron.ts): fails jobs whose stage messages were dead-lettered, for when no
 * worker runs to do it (a fleet scaled to zero). Workers do the same every 15 s while they run.
 */
export async function handler(): Promise<{ failed: string[]; resent: string[] }> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-dead-letter-sweep" });
  const ports = openAwsPorts(awsPortsOptionsFromConfig(config));
  try {
    const failed = await failDeadLetteredJobs(ports, ["base", "refine"]);
    if (failed.length) logger.warn({ jobIds: failed }, "failed jobs whose stage messages were dead-lettered");
    // The submit outbox's reconciler: a submit that died between writing a job and marking it
    // enqueued leaves a queued job whose stage 0 may never have been sent.
    const resent = await reconcileQueuedJobs(ports);
    if (resent.length) logger.warn({ jobIds: resent }, "re-sent stage 0 of queued jobs left unmarked by a dead submit");
    return { failed, resent };
  } finally {
    await ports.close();
  }
}
