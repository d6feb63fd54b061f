import type { JobRecord } from "@kiln/shared";

/** Words both presenters use, so Discord and Slack users read the same thing. */

export function shortPrompt(prompt: string, max = 120): string {
  const flat = prompt.replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export function queuedText(job: JobRecord, position: number): string {
  return `⏳ Queued (position ${position}) — “${shortPrompt(job.plan.prompt)}”`;
}

export function progressText(job: JobRecord): string {
  const p = job.progress;
  if (!p || job.status === "queued") return `⏳ Waiting for a worker — “${shortPrompt(job.plan.prompt)}”`;
  const stages = job.plan.stages.length;
  const fraction = (p.stage + (p.steps > 0 ? p.step / p.steps : 0)) / Math.max(1, stages);
  const percent = Math.min(100, Math.round(100 * fraction));
  return `🎨 Rendering ${percent}% — stage ${p.stage + 1}/${stages} (${p.stageKind}), step ${p.step}/${p.steps} — “${shortPrompt(job.plan.prompt)}”`;
}

/** The caption under the images: the parameters someone would need to ask again. */
export function captionText(job: JobRecord, mention?: string): string {
  const p = job.plan;
  const parts = [`${p.width}×${p.height}`, p.mode, `${p.steps} steps`, `seed ${p.seed}`];
  return `${mention ? `${mention} ` : ""}“${shortPrompt(p.prompt, 300)}”${p.negativePrompt ? ` (not: ${shortPrompt(p.negativePrompt, 100)})` : ""} — ${parts.join(" · ")}`;
}

export function infoText(job: JobRecord): string {
  const p = job.plan;
  const lines = [
    `**Job** ${job.id} (${job.status})`,
    `**Prompt** ${p.prompt}`,
    ...(p.negativePrompt ? [`**Negative** ${p.negativePrompt}`] : []),
    `**Mode** ${p.mode} · **Size** ${p.width}×${p.height} · **Steps** ${p.steps} · **Seed** ${p.seed}`,
    `**Guidance** ${p.guidanceScale} (rescale ${p.guidanceRescale}) · **Scheduler** ${p.scheduler ?? "model default"}${p.karras ? " (Karras)" : ""}`,
    ...(p.mode === "ensemble" ? [`**High-noise fraction** ${p.highNoiseFrac}`] : []),
    ...(p.mode === "sdedit" ? [`**Strength** ${p.strength} · **Hires scale** ${p.hiresScale}`] : []),
    `**Created** ${job.createdAt}${job.finishedAt ? ` · **Finished** ${job.finishedAt}` : ""}`,
  ];
  return lines.join("\n");
}

export function failureText(job: JobRecord): string {
  const reason = job.error?.message ?? `The render ended ${job.status}.`;
  const verb = job.status === "canceled" ? "was canceled" : job.status === "expired" ? "expired" : "failed";
  return `❌ The render ${verb} — “${shortPrompt(job.plan.prompt)}”. ${reason}`;
}

export const NOT_AVAILABLE_YET =
  "Variations and upscale need image inputs (img2img from this picture), which this Kiln server does not have yet. Re-roll works today.";
