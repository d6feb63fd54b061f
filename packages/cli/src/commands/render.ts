import { parseArgs } from "node:util";

import { loadConfig } from "@kiln/shared";

import { printProgress, renderAndWait, saveImages } from "../render-client.js";

/** `kiln render "a prompt" [--mode ensemble] [--width 1024] … [--out render.png]` against a running Kiln. */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      key: { type: "string" },
      out: { type: "string", default: "render.png" },
      mode: { type: "string" },
      width: { type: "string" },
      height: { type: "string" },
      steps: { type: "string" },
      seed: { type: "string" },
      n: { type: "string" },
      scheduler: { type: "string" },
      format: { type: "string" },
      negative: { type: "string" },
    },
  });
  const prompt = positionals.join(" ");
  if (!prompt)
    throw new Error(
      'usage: kiln render "a prompt" [--mode base|ensemble|sdedit] [--width W --height H] [--steps N] [--seed S] [--out FILE] [--key KEY] [--url URL]',
    );
  const config = loadConfig();
  const key = values.key ?? config.cli.apiKey;
  if (!key) throw new Error("pass --key or set KILN_API_KEY (create one with `kiln keys create --name me`)");
  const url = values.url ?? config.publicUrl;
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const request = Object.fromEntries(
    Object.entries({
      prompt,
      negative_prompt: values.negative,
      mode: values.mode,
      width: num(values.width),
      height: num(values.height),
      steps: num(values.steps),
      seed: num(values.seed),
      n: num(values.n),
      scheduler: values.scheduler,
      output_format: values.format,
    }).filter(([, v]) => v !== undefined),
  );
  const job = await renderAndWait(url, key, request, printProgress);
  if (process.stderr.isTTY) process.stderr.write("\n");
  if (job.status !== "succeeded")
    throw new Error(`render ${job.id} ${job.status}: ${job.error?.code} — ${job.error?.message}`);
  for (const file of await saveImages(job, values.out!)) console.log(file);
}
