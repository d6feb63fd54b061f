import { KilnError, loadConfig } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";

import { createApp, type KilnApp } from "../app.js";
import type { ApiDeps } from "../deps.js";
import { apiDepsFromConfig } from "./config-deps.js";

/**
 * Kiln's API on an edge runtime (Cloudflare's workerd; any host with the Worker module shape
 * `fetch(request, env, ctx)`), on the AWS family over `fetch`. Bundled by `bundles.ts` (target
 * `edge`) with the AWS SDK's browser builds, whose request handler is `fetch`.
 *
 * Settings come from the Worker's string bindings (the same `KILN_*` names); credentials from the
 * `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) secrets, because there is
 * no instance role or credentials file to find on the edge. Downloads are presigned S3 URLs; the
 * local family (SQLite, files) does not run here.
 */
export type EdgeEnv = Record<string, unknown>;

export function createEdgeApp(env: EdgeEnv): KilnApp {
  const strings = Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
  const config = loadConfig(strings);
  if (config.backend !== "aws") {
    throw new KilnError(
      "config_invalid",
      "The edge API runs on the AWS family: set KILN_BACKEND=aws with KILN_BUCKET, KILN_TABLE and KILN_QUEUE_URLS.",
    );
  }
  const accessKeyId = strings.AWS_ACCESS_KEY_ID;
  const secretAccessKey = strings.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new KilnError(
      "config_invalid",
      "The edge API needs AWS credentials as secrets: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (an IAM user limited to Kiln's queues, bucket and table).",
    );
  }
  const ports = openAwsPorts({
    ...awsPortsOptionsFromConfig(config),
    credentials: { accessKeyId, secretAccessKey, sessionToken: strings.AWS_SESSION_TOKEN || undefined },
  });
  return createApp({
    ...apiDepsFromConfig(config, ports, { log: consoleLog(config.logLevel) }),
    // Without KILN_PUBLIC_URL, links use the host each request arrived at.
    publicUrl: strings.KILN_PUBLIC_URL ? config.publicUrl : "",
  });
}

const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

/** One JSON line per entry on the console, which is what edge runtimes collect. */
function consoleLog(level: string): ApiDeps["log"] {
  const min = LEVELS.indexOf(level);
  return (lvl, obj, msg) => {
    if (LEVELS.indexOf(lvl) < min) return;
    console.log(JSON.stringify({ level: lvl, time: Date.now(), name: "kiln-api", ...obj, msg }));
  };
}

let app: KilnApp | undefined;

/** The Worker: the app and its SDK clients are built on the first request of each isolate. */
export default {
  fetch(request: Request, env: EdgeEnv, ctx: unknown): Response | Promise<Response> {
    app ??= createEdgeApp(env);
    return app.fetch(request, env, ctx as never);
  },
};
