import { failDeadLetteredJobs, loadConfig } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { createLogger } from "@kiln/shared/node";

/**
 * Lambda handler (infra/cron.ts): fails jobs whose stage messages were dead-lettered, for when no
 * worker runs to do it (a fleet scaled to zero). Workers do the same every 15 s while they run.
 */
export async function handler(): Promise<{ failed: string[] }> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-dead-letter-sweep" });
  const ports = openAwsPorts(awsPortsOptionsFromConfig(config));
  try {
    const failed = await failDeadLetteredJobs(ports, ["base", "refine"]);
    if (failed.length) logger.warn({ jobIds: failed }, "failed jobs whose stage messages were dead-lettered");
    return { failed };
  } finally {
    await ports.close();
  }
}
