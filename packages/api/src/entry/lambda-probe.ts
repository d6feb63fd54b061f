import { spawn } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";

/**
 * Runs a built Lambda bundle (bundles.ts, target `lambda`) the way the Node 20 runtime does: a
 * fresh `node` process, no tsx and no node_modules in reach (its working directory is the bundle's
 * own), importing the module and calling `handler` with Function URL events. Reports the time of
 * the import and of each request, measured inside that process. Used by the bundle's test and by
 * `npm run bench -- lambda-bundle`.
 */
export interface ProbeRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface ProbeResponse {
  ms: number;
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

export interface ProbeResult {
  importMs: number;
  responses: ProbeResponse[];
}

const DOMAIN = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws";

/** A Lambda Function URL event (payload version 2.0), as AWS sends it. */
export function functionUrlEvent(request: ProbeRequest): Record<string, unknown> {
  const url = new URL(request.path, `https://${DOMAIN}`);
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers: { host: DOMAIN, "x-forwarded-proto": "https", "x-forwarded-port": "443", ...request.headers },
    queryStringParameters: url.search ? Object.fromEntries(url.searchParams) : undefined,
    requestContext: {
      accountId: "anonymous",
      apiId: DOMAIN.split(".")[0],
      domainName: DOMAIN,
      domainPrefix: DOMAIN.split(".")[0],
      http: {
        method: request.method,
        path: url.pathname,
        protocol: "HTTP/1.1",
        sourceIp: "203.0.113.7",
        userAgent: "kiln-probe",
      },
      requestId: `probe-${Math.random().toString(16).slice(2)}`,
      routeKey: "$default",
      stage: "$default",
      time: "04/Dec/2026:00:00:00 +0000",
      timeEpoch: Date.now(),
    },
    body: request.body,
    isBase64Encoded: false,
  };
}

const PROBE = `
const events = JSON.parse(process.env.KILN_PROBE_EVENTS);
const t0 = performance.now();
const mod = await import(process.env.KILN_PROBE_MODULE);
const importMs = performance.now() - t0;
const responses = [];
for (const event of events) {
  const start = performance.now();
  const r = await mod.handler(event, {});
  responses.push({ ms: performance.now() - start, statusCode: r.statusCode, headers: r.headers ?? {}, body: r.body ?? "" });
}
process.stdout.write(JSON.stringify({ importMs, responses }));
process.exit(0);
`;

export function probeLambdaBundle(
  file: string,
  env: Record<string, string>,
  requests: ProbeRequest[],
): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", PROBE], {
      cwd: path.dirname(file),
      // Only what the Lambda runtime would set: no NODE_OPTIONS (tsx), no inherited KILN_*.
      env: {
        PATH: process.env.PATH ?? "",
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
        ...env,
        KILN_PROBE_MODULE: pathToFileURL(file).href,
        KILN_PROBE_EVENTS: JSON.stringify(requests.map(functionUrlEvent)),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (err += c));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) return reject(new Error(`the bundle's process exited with ${code}: ${err.slice(-2000)}`));
      try {
        resolve(JSON.parse(out) as ProbeResult);
      } catch {
        reject(new Error(`the bundle's process printed no result: ${out.slice(-500)} ${err.slice(-2000)}`));
      }
    });
  });
}
