/** The four result buttons, on both platforms: `kiln:<action>:<job id>` (Discord custom_id, Slack action value). */
export const BUTTON_ACTIONS = ["reroll", "vary", "upscale", "info"] as const;
export type ButtonAction = (typeof BUTTON_ACTIONS)[number];

export const BUTTON_LABELS: Record<ButtonAction, string> = {
  reroll: "🎲 Re-roll",
  vary: "🔀 Variations",
  upscale: "🔍 Upscale",
  info: "ℹ️ Info",
};

export function buttonId(action: ButtonAction, jobId: string): string {
  return `kiln:${action}:${jobId}`;
}

export function parseButtonId(id: string): { action: ButtonAction; jobId: string } | null {
  const match = /^kiln:([a-z]+):(job_[A-Za-z0-9_-]{1,80})$/.exec(id);
  if (!match || !(BUTTON_ACTIONS as readonly string[]).includes(match[1]!)) return null;
  return { action: match[1] as ButtonAction, jobId: match[2]! };
}
