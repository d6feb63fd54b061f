import fs from "node:fs";
import path from "node:path";

import { CliError } from "./cli/args.js";

/** A small HTTP client of Kiln's public API, used by `kiln render` and the start-up demo. */
export interface RenderJob {
  id: string;
  status: string;
  seed: number;
  progress: { stage: number; stage_kind: string; step: number; steps: number; stages: number };
  images: { url: string; width: number; height: number; seed: number; format: string }[];
  error?: { code: string; message: string };
}

/** fetch, with "nothing answers there" turned into a sentence that says where it looked and what to do. */
async function reach(url: string, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (e as Error).message;
    throw new CliError(
      `cannot reach Kiln at ${new URL(url).origin} (${why}); start it with \`npm start\`, or point KILN_API_URL or --url at a running Kiln`,
    );
  }
}

async function call(url: string, key: string, init: RequestInit = {}): Promise<unknown> {
  const res = await reach(url, {
    ...init,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...(init.headers ?? {}) },
  });
  const text = await res.text();
  let body: { detail?: string; errors?: { field: string; message: string }[] } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    if (!res.ok) throw new CliError(`${init.method ?? "GET"} ${url} → ${res.status}: ${text.slice(0, 200)}`);
    throw new CliError(`${url} did not answer with JSON; is KILN_API_URL or --url a Kiln API?`);
  }
  if (!res.ok) {
    const fields = body.errors?.map((e) => `${e.field}: ${e.message}`).join("; ");
    throw new CliError(
      `${init.method ?? "GET"} ${url} → ${res.status}: ${body.detail ?? text}${fields ? ` (${fields})` : ""}`,
    );
  }
  return body;
}

export async function renderAndWait(
  baseUrl: string,
  key: string,
  request: Record<string, unknown>,
  onProgress?: (job: RenderJob) => void,
  options: { timeoutMs?: number; pollMs?: number } = {},
): Promise<RenderJob> {
  const timeoutMs = options.timeoutMs ?? 30 * 60_000;
  const created = (await call(`${baseUrl}/v1/renders`, key, { method: "POST", body: JSON.stringify(request) })) as {
    id: string;
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = (await call(`${baseUrl}/v1/renders/${created.id}`, key)) as RenderJob;
    onProgress?.(job);
    if (["succeeded", "failed", "canceled", "expired"].includes(job.status)) return job;
    if (Date.now() > deadline)
      throw new CliError(`render ${created.id} did not finish within ${timeoutMs / 1000} s (status ${job.status})`);
    await new Promise((r) => setTimeout(r, options.pollMs ?? 200));
  }
}

export async function saveImages(job: RenderJob, outPath: string): Promise<string[]> {
  const files: string[] = [];
  for (const [i, image] of job.images.entries()) {
    const res = await reach(image.url);
    if (!res.ok) throw new CliError(`download of image ${i} failed: ${res.status}`);
    const ext = image.format === "jpeg" ? "jpg" : image.format;
    const file =
      job.images.length === 1
        ? outPath.replace(/\.(png|webp|jpe?g)$/i, "") + `.${ext}`
        : outPath.replace(/\.(png|webp|jpe?g)$/i, "") + `-${i}.${ext}`;
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    fs.writeFileSync(file, Buffer.from(await res.arrayBuffer()));
    files.push(file);
  }
  return files;
}

/** One line on stderr, redrawn in place on a terminal: `[stage 2/2 refine] ███████░░░ 7/10`. */
export function progressLine(job: RenderJob): string {
  const p = job.progress;
  const width = 24;
  const done = p.steps ? Math.round((p.step / p.steps) * width) : 0;
  return `${job.id} ${job.status.padEnd(9)} [stage ${p.stage + 1}/${p.stages} ${p.stage_kind}] ${"█".repeat(done)}${"░".repeat(width - done)} ${p.step}/${p.steps}`;
}

/** Carriage return, then erase the line (ANSI EL 2), so a shorter line leaves no characters of a longer one. */
export const redraw = (line: string): string => `\r\x1b[2K${line}`;

export function printProgress(job: RenderJob): void {
  if (process.stderr.isTTY) process.stderr.write(redraw(progressLine(job)));
}

/** Ends the redrawn line so what follows starts on its own. */
export function endProgress(): void {
  if (process.stderr.isTTY) process.stderr.write("\n");
}
