import type { ApiDeps } from "../deps.js";
import { DEFAULT_IMAGE_INPUT_LIMITS } from "./image-inputs.js";

/** Routes that take input pictures, in JSON (base64) or multipart/form-data. */
const IMAGE_ROUTES = new Set(["/v1/renders", "/v1/images/edits", "/v1/images/variations"]);

export const acceptsImages = (method: string, path: string): boolean => method === "POST" && IMAGE_ROUTES.has(path);

/** Body bound for those routes: an image and a mask, base64-inflated (4/3), plus the usual JSON allowance. */
export function imageBodyLimit(deps: Pick<ApiDeps, "imageInputs" | "maxBodyBytes">): number {
  const perFile = (deps.imageInputs ?? DEFAULT_IMAGE_INPUT_LIMITS).maxBytes;
  return Math.ceil((2 * perFile * 4) / 3) + deps.maxBodyBytes;
}
