/**
 * Scheduled work: the dead-letter sweep (fail jobs whose stage messages were dead-lettered while
 * no worker was running to notice) runs on the workers every 15 s; this schedule covers a fleet
 * scaled to zero, so such jobs still end `failed` with `stage_dead_lettered` within minutes.
 */
import { apiEnvironment } from "./api";
import { asSstPermissions, dataArns } from "./permissions";
import { deadLetterSweepStatements } from "./plan/iam";

new sst.aws.Cron("KilnDeadLetterSweep", {
  schedule: "rate(5 minutes)",
  function: {
    handler: "packages/cli/src/cron/dead-letter-sweep.handler",
    runtime: "nodejs20.x",
    timeout: "60 seconds",
    permissions: asSstPermissions(deadLetterSweepStatements(dataArns)),
    environment: apiEnvironment,
  },
});
