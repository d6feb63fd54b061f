import { isImageMode, KilnError, type RenderRequest } from "@kiln/shared";

import { FetchRefusedError, fetchWithPolicy, type OutboundFetchPolicy } from "../outbound/address-policy.js";
import { type ImageHeader, ImageHeaderError, readImageHeader } from "./image-header.js";

/** Bounds on input pictures (KILN_MAX_IMAGE_BYTES, KILN_MAX_IMAGE_PIXELS, KILN_IMAGE_FETCH_SECONDS). */
export interface ImageInputLimits {
  maxBytes: number;
  maxPixels: number;
  fetchTimeoutMs: number;
}

export const DEFAULT_IMAGE_INPUT_LIMITS: ImageInputLimits = {
  maxBytes: 10 * 1024 * 1024,
  maxPixels: 4096 * 4096,
  fetchTimeoutMs: 10_000,
};

/** A picture as received and checked: stored as these bytes, read by every stage and retry. */
export interface ReceivedImage {
  bytes: Uint8Array;
  header: ImageHeader;
}

/** The inputs of an image-mode render, ready to be stored under the job. */
export interface SubmittedInputs {
  image: ReceivedImage;
  mask?: ReceivedImage;
  maskFrom: "luminance" | "alpha";
}

type Field = "image" | "mask";

/** The schema's `image`/`mask` value when the picture came as a file part (multipart, OpenAI routes). */
export const MULTIPART_FILE = "multipart-file";
const valueOf = (v: string | undefined) => (v === MULTIPART_FILE ? undefined : v);

function rejected(status: 400 | 413 | 415, field: Field, message: string, code = "input_image_invalid"): KilnError {
  return new KilnError(code, `${field} is refused: ${message}.`, {
    status,
    retryable: false,
    details: { errors: [{ field, message }] },
  });
}

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function decodeBase64(text: string, field: Field, maxBytes: number): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  if (!BASE64.test(clean))
    throw rejected(400, field, "not a data URL, base64 or an https URL; send one of those or a multipart part");
  if (Math.floor((clean.length * 3) / 4) > maxBytes + 3)
    throw rejected(413, field, `the decoded file is over ${maxBytes} bytes, the most accepted`);
  const binary = atob(clean.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A JSON value (data URL, bare base64, or an http(s) URL fetched under the address policy) or uploaded bytes. */
async function bytesOf(
  value: string | Uint8Array,
  field: Field,
  limits: ImageInputLimits,
  policy: OutboundFetchPolicy,
): Promise<Uint8Array> {
  if (typeof value !== "string") return value;
  if (/^https?:\/\//i.test(value)) {
    try {
      return (await fetchWithPolicy(value, policy, { maxBytes: limits.maxBytes, timeoutMs: limits.fetchTimeoutMs }))
        .bytes;
    } catch (e) {
      if (e instanceof FetchRefusedError) throw rejected(e.status, field, e.message, "input_url_refused");
      throw e;
    }
  }
  const dataUrl = /^data:([^,]*?),(.*)$/s.exec(value);
  if (dataUrl) {
    if (!/;base64$/i.test(dataUrl[1]!))
      throw rejected(400, field, "a data URL must be base64 (data:image/png;base64,…)");
    return decodeBase64(dataUrl[2]!, field, limits.maxBytes);
  }
  return decodeBase64(value, field, limits.maxBytes);
}

/** Reads and checks one picture: size in bytes, a complete PNG/JPEG/WebP, not animated, not empty, bounded pixels. */
export async function receiveImage(
  value: string | Uint8Array,
  field: Field,
  limits: ImageInputLimits,
  policy: OutboundFetchPolicy,
): Promise<ReceivedImage> {
  const bytes = await bytesOf(value, field, limits, policy);
  if (bytes.length > limits.maxBytes)
    throw rejected(413, field, `the file is ${bytes.length} bytes; at most ${limits.maxBytes} are accepted`);
  let header: ImageHeader;
  try {
    header = readImageHeader(bytes);
  } catch (e) {
    if (e instanceof ImageHeaderError) throw rejected(e.status, field, e.message);
    throw e;
  }
  if (header.width === 0 || header.height === 0)
    throw rejected(400, field, `the picture is ${header.width}×${header.height}, zero-sized; send a real picture`);
  if (header.animated) throw rejected(400, field, "the picture is animated; send a still PNG, JPEG or WebP");
  if (header.width * header.height > limits.maxPixels)
    throw rejected(
      413,
      field,
      `the picture is ${header.width}×${header.height}, over ${limits.maxPixels} pixels; scale it down first`,
    );
  return { bytes, header };
}

/**
 * The inputs of an image-mode request, checked before anything is stored or any quota is taken. `files` holds
 * multipart parts, which win over JSON values of the same name. `maskFrom: "alpha"` is OpenAI's convention
 * (transparent = edit): without a mask the picture itself must have transparency.
 */
export async function receiveInputs(
  request: Pick<RenderRequest, "mode" | "image" | "mask">,
  files: { image?: Uint8Array; mask?: Uint8Array },
  limits: ImageInputLimits,
  policy: OutboundFetchPolicy,
  maskFrom: "luminance" | "alpha" = "luminance",
): Promise<SubmittedInputs | undefined> {
  if (!isImageMode(request.mode)) return undefined;
  const imageValue = files.image ?? valueOf(request.image);
  if (imageValue === undefined) throw rejected(400, "image", `mode ${request.mode} needs an image`);
  const image = await receiveImage(imageValue, "image", limits, policy);
  const maskValue = files.mask ?? valueOf(request.mask);
  const mask = maskValue === undefined ? undefined : await receiveImage(maskValue, "mask", limits, policy);
  if (mask && (mask.header.width !== image.header.width || mask.header.height !== image.header.height)) {
    throw rejected(
      400,
      "mask",
      `the mask is ${mask.header.width}×${mask.header.height} but the image is ${image.header.width}×${image.header.height}; send a mask of the image's size`,
    );
  }
  if (maskFrom === "alpha" && request.mode === "inpaint" && !(mask ?? image).header.hasAlpha) {
    throw rejected(
      400,
      mask ? "mask" : "image",
      "it has no transparency, so nothing is marked to edit; make the area to edit fully transparent (or send a mask whose transparent pixels mark it)",
    );
  }
  return { image, ...(mask ? { mask } : {}), maskFrom };
}
