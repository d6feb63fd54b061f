import { webhookEventSinkFromConfig } from "@kiln/api/config";
import { failDeadLetteredJobs, loadConfig, reconcileQueuedJobs, redeliverDueEvents } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { createLogger } from "@kiln/shared/node";

/**
 * Lambda handler (infra/cron.ts): fails jobs whose stage messages were dead-lettered, for when no
 * worker runs to do it (a fleet scaled to zero). Workers do the same every 15 s while they run.
 */
export async function handler(): Promise<{ failed: string[]; resent: string[]; told: string[] }> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-dead-letter-sweep" });
  const ports = openAwsPorts(awsPortsOptionsFromConfig(config));
  const events = webhookEventSinkFromConfig(config, ports, (level, obj, msg) => logger[level](obj, msg));
  try {
    const failed = await failDeadLetteredJobs(ports, ["base", "refine"], new Date(), events);
    if (failed.length) logger.warn({ jobIds: failed }, "failed jobs whose stage messages were dead-lettered");
    // The submit outbox's reconciler: a submit that died between writing a job and marking it
    // enqueued leaves a queued job whose stage 0 may never have been sent.
    const resent = await reconcileQueuedJobs(ports);
    if (resent.length) logger.warn({ jobIds: resent }, "re-sent stage 0 of queued jobs left unmarked by a dead submit");
    // The event outbox's sweep: events stored with a transition whose teller died before telling them.
    const told = await redeliverDueEvents(ports.jobs, events, {
      onError: (e, event) => logger.warn({ err: String(e), event }, "due job event not delivered"),
    });
    if (told.length) logger.warn({ jobIds: told }, "told job events a crash had left untold");
    return { failed, resent, told };
  } finally {
    await ports.close();
  }
}
