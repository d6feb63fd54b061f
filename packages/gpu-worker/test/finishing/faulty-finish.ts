// Fault hooks for finishing-threads.test.ts: a finishing thread that runs this module instead of finish-image.ts
// dies or never answers on request, by the image's `parameters` text.
import { finishImage as realFinishImage, type FinishRequest } from "../../src/engine/finishing/finish-image.js";
import type { EncodedImage } from "../../src/engine/image-files.js";

export async function finishImage(r: FinishRequest): Promise<EncodedImage> {
  if (r.parameters === "crash") process.exit(3); // in a worker thread: ends the thread, not the process
  if (r.parameters === "hang") await new Promise(() => undefined);
  return realFinishImage(r);
}
