import { BUTTON_ACTIONS, BUTTON_LABELS, buttonId } from "../core/buttons.js";

/** The result buttons as a Block Kit actions block; each button's value is its `kiln:<action>:<job>` id. */
export function actionsBlock(jobId: string): unknown {
  return {
    type: "actions",
    block_id: `kiln_${jobId}`,
    elements: BUTTON_ACTIONS.map((action) => ({
      type: "button",
      action_id: `kiln_${action}`,
      text: { type: "plain_text", text: BUTTON_LABELS[action], emoji: true },
      value: buttonId(action, jobId),
      ...(action === "reroll" ? { style: "primary" } : {}),
    })),
  };
}

export function sectionBlock(text: string): unknown {
  return { type: "section", text: { type: "mrkdwn", text: text.slice(0, 3000) } };
}

export function imageBlock(url: string, alt: string): unknown {
  return { type: "image", image_url: url, alt_text: alt.slice(0, 2000) };
}

/** Slack's mrkdwn bolds with single asterisks; the shared texts use Markdown's double ones. */
export function mrkdwn(text: string): string {
  return text.replace(/\*\*(.+?)\*\*/g, "*$1*");
}
