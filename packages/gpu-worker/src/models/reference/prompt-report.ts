import type { Logger } from "@kiln/shared/node";

import { ignoredWords, matchingPictures } from "./picture-set.js";
import { REFERENCE_MODEL_MARKER } from "./reference-models.js";

/**
 * On a reference model, says which prompt words it ignored and how many pictures the prompt matches, so a
 * user who asks for "a lighthouse" learns why they got a random shape.
 */
export function reportReferencePrompt(
  index: Record<string, unknown>,
  prompt: string,
  negativePrompt: string | undefined,
  logger: Logger | undefined,
): void {
  if (!logger || !index[REFERENCE_MODEL_MARKER]) return;
  const ignored = [...new Set([...ignoredWords(prompt), ...ignoredWords(negativePrompt ?? "")])];
  const matches = matchingPictures(prompt).length;
  const message =
    ignored.length > 0
      ? `reference model: ignored words it does not know (${ignored.join(", ")}); it draws coloured shapes only`
      : "reference model: every prompt word known";
  logger[ignored.length > 0 ? "warn" : "info"]({ ignoredWords: ignored, matchingPictures: matches }, message);
}
