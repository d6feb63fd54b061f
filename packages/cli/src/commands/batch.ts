import fs from "node:fs";
import { parseArgs } from "node:util";

import { loadConfig } from "@kiln/shared";

/** What `GET /v1/batches/{id}` answers (the fields the CLI shows). */
export interface BatchRunView {
  id: string;
  manifest_id: string;
  status: string;
  counts: {
    total: number;
    new: number;
    skipped: number;
    queued: number;
    running: number;
    succeeded: number;
    failed: number;
  };
  estimate: { images: number; gpu_seconds: number; source: string };
  summary?: string;
  contact_sheet: { url: string } | null;
  index: { url: string } | null;
  gallery: { url: string } | null;
}

const ENDED = ["succeeded", "failed", "canceled"];

async function call(url: string, key: string, init: RequestInit = {}): Promise<unknown> {
  const res = await fetch(url, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers ?? {}) } });
  const text = await res.text();
  const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if (!res.ok) {
    const errors = Array.isArray(body.errors)
      ? (body.errors as { field: string; message: string; line?: number; column?: number }[])
          .map((e) => `  ${e.field}${e.line ? ` (line ${e.line}, column ${e.column})` : ""}: ${e.message}`)
          .join("\n")
      : "";
    throw new Error(
      `${init.method ?? "GET"} ${url} → ${res.status}: ${String(body.detail ?? text)}${errors ? `\n${errors}` : ""}`,
    );
  }
  return body;
}

/** `catalogue  running  [██████░░░░░░] 12/40 done · 1 failed · 3 running · 4 skipped` */
export function batchProgressLine(run: BatchRunView, width = 24): string {
  const c = run.counts;
  const done = c.succeeded + c.failed;
  const filled = c.new ? Math.round((done / c.new) * width) : width;
  return `${run.manifest_id} ${run.status.padEnd(9)} [${"█".repeat(filled)}${"░".repeat(width - filled)}] ${done}/${c.new} done · ${c.failed} failed · ${c.running} running · ${c.skipped} skipped`;
}

function show(run: BatchRunView): void {
  console.log(
    [
      `${run.id}  ${run.manifest_id}  ${run.status}`,
      `  counts: ${Object.entries(run.counts)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`,
      `  estimate: ${run.estimate.images} images, ${run.estimate.gpu_seconds} GPU s (${run.estimate.source})`,
      ...(run.summary ? [`  ${run.summary}`] : []),
      ...(run.contact_sheet ? [`  contact sheet: ${run.contact_sheet.url}`] : []),
      ...(run.gallery ? [`  gallery: ${run.gallery.url}`] : []),
      ...(run.index ? [`  index: ${run.index.url}`] : []),
    ].join("\n"),
  );
}

async function waitFor(url: string, key: string, id: string, pollMs: number): Promise<BatchRunView> {
  for (;;) {
    const run = (await call(`${url}/v1/batches/${id}`, key)) as BatchRunView;
    if (process.stderr.isTTY) process.stderr.write(`\r${batchProgressLine(run)}`);
    if (ENDED.includes(run.status)) {
      if (process.stderr.isTTY) process.stderr.write("\n");
      return run;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

const USAGE = [
  "usage: kiln batch run FILE [--wait] [--dry-run]   run a manifest (YAML or JSON)",
  "       kiln batch status RUN [--wait]             a run's status, counts and output links",
  "       kiln batch list                            your runs, newest first",
  "options: --key KEY (or KILN_API_KEY), --url URL (default KILN_PUBLIC_URL)",
].join("\n");

/** `kiln batch run|status|list` against a running Kiln's public API. */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      key: { type: "string" },
      wait: { type: "boolean", default: false },
      "dry-run": { type: "boolean", default: false },
      "poll-ms": { type: "string", default: "1000" },
    },
  });
  const [sub, arg] = positionals;
  const config = loadConfig();
  const key = values.key ?? config.cli.apiKey;
  if (!sub) throw new Error(USAGE);
  if (!key) throw new Error("pass --key or set KILN_API_KEY (create one with `kiln keys create --name me`)");
  const url = (values.url ?? config.publicUrl).replace(/\/+$/, "");
  const pollMs = Number(values["poll-ms"]);
  switch (sub) {
    case "run": {
      if (!arg) throw new Error(USAGE);
      const text = fs.readFileSync(arg, "utf8");
      const type = /\.json$/i.test(arg) ? "application/json" : "application/yaml";
      const query = values["dry-run"] ? "?dry_run=true" : "";
      const body = await call(`${url}/v1/batches${query}`, key, {
        method: "POST",
        body: text,
        headers: { "content-type": type },
      });
      if (values["dry-run"]) {
        console.log(JSON.stringify(body, null, 2));
        return;
      }
      const started = body as BatchRunView;
      console.error(`started ${started.id}: ${started.counts.new} to render, ${started.counts.skipped} already made`);
      show(values.wait ? await waitFor(url, key, started.id, pollMs) : started);
      return;
    }
    case "status": {
      if (!arg) throw new Error(USAGE);
      show(
        values.wait
          ? await waitFor(url, key, arg, pollMs)
          : ((await call(`${url}/v1/batches/${arg}`, key)) as BatchRunView),
      );
      return;
    }
    case "list": {
      const { data } = (await call(`${url}/v1/batches`, key)) as { data: BatchRunView[] };
      for (const r of data)
        console.log(
          `${r.id}  ${r.manifest_id.padEnd(24)} ${r.status.padEnd(9)} ${r.counts.succeeded}/${r.counts.new} new, ${r.counts.skipped} skipped`,
        );
      if (data.length === 0) console.log("no batch runs yet");
      return;
    }
    default:
      throw new Error(USAGE);
  }
}
