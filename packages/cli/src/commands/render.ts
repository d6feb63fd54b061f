import { loadConfig } from "@kiln/shared";

import { CliError, parseFlags, UsageError } from "../cli/args.js";
import { endProgress, printProgress, renderAndWait, saveImages } from "../render-client.js";

/** `kiln render "a prompt" [--mode ensemble] [--width 1024] … [--out render.png]` against a running Kiln. */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseFlags(
    argv,
    {
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
    true,
  );
  const prompt = positionals.join(" ");
  if (!prompt) throw new UsageError('give a prompt: kiln render "a lighthouse at dusk"');
  const config = loadConfig();
  const key = values.key ?? config.cli.apiKey;
  if (!key) throw new UsageError("pass --key or set KILN_API_KEY (create one with `npx kiln keys create --name me`)");
  const url = (values.url ?? config.apiUrl).replace(/\/$/, "");
  const num = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n))
      throw new UsageError(`--${flag} must be a number (got ${JSON.stringify(v)})`);
    return n;
  };
  const request = Object.fromEntries(
    Object.entries({
      prompt,
      negative_prompt: values.negative,
      mode: values.mode,
      width: num("width", values.width),
      height: num("height", values.height),
      steps: num("steps", values.steps),
      seed: num("seed", values.seed),
      n: num("n", values.n),
      scheduler: values.scheduler,
      output_format: values.format,
    }).filter(([, v]) => v !== undefined),
  );
  const job = await renderAndWait(url, key, request, printProgress);
  endProgress();
  if (job.status !== "succeeded")
    throw new CliError(`render ${job.id} ${job.status}: ${job.error?.code} — ${job.error?.message}`);
  for (const file of await saveImages(job, values.out!)) console.log(file);
}
