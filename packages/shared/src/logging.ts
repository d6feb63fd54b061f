import { type Logger, pino } from "pino";

export type { Logger } from "pino";

/**
 * Structured JSON logs. Every line about a job carries `jobId` (use `logger.child({ jobId })`).
 * Written to stderr so a CLI's stdout stays machine-readable (e.g. `kiln keys create`).
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    { level: options.level ?? "info", name: options.name ?? "kiln", base: { pid: process.pid } },
    pino.destination(2),
  );
}
