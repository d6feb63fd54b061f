import { KilnError } from "../errors.js";

/**
 * Resolution buckets: the sizes TensorRT engines are built for (one engine per model part and
 * bucket). SDXL was trained on about one megapixel in these aspect ratios, so the same list is
 * also where it draws best.
 *
 * What "maps" means (documented in docs/architecture.md, "Resolution buckets"):
 * - a size that is a bucket is kept and recorded as that bucket;
 * - strict (KILN_STRICT_BUCKETS=true): any other size is refused with the list;
 * - otherwise a size at SDXL scale (from half the smallest bucket's area to twice the largest's) snaps to the bucket of
 *   the nearest aspect ratio (log-ratio distance; ties go to the larger area) — the render is made
 *   at the bucket's size and the job records the size asked for;
 * - a smaller size (tiny and reference models, previews at 64–256 px) or a much larger one (2048²) is
 *   kept as asked with no bucket: it runs on the worker's unbucketed sessions (CUDA or CPU).
 */
export interface ResolutionBucket {
  width: number;
  height: number;
}

/** SDXL's standard set (Stability's training buckets around 1024²). */
export const SDXL_BUCKETS: readonly ResolutionBucket[] = [
  { width: 1024, height: 1024 },
  { width: 1152, height: 896 },
  { width: 896, height: 1152 },
  { width: 1216, height: 832 },
  { width: 832, height: 1216 },
  { width: 1344, height: 768 },
  { width: 768, height: 1344 },
  { width: 1536, height: 640 },
  { width: 640, height: 1536 },
];

/** `1024x1024`: the bucket's id in job plans, queue names, engine keys and KILN_BUCKETS. */
export const bucketId = (b: ResolutionBucket): string => `${b.width}x${b.height}`;

/** Parses `1024x1024` (also `1024×1024`); undefined when it is not W×H with both sides multiples of 8. */
export function parseBucket(text: string): ResolutionBucket | undefined {
  const m = /^(\d{2,5})\s*[x×]\s*(\d{2,5})$/i.exec(text.trim());
  if (!m) return undefined;
  const width = Number(m[1]);
  const height = Number(m[2]);
  if (width % 8 !== 0 || height % 8 !== 0) return undefined;
  return { width, height };
}

export interface BucketPolicy {
  buckets: readonly ResolutionBucket[];
  /** KILN_STRICT_BUCKETS: refuse sizes that are not buckets instead of mapping them. */
  strict: boolean;
  /** KILN_BUCKET_ROUTING=lanes: a bucketed job's stages travel in its bucket's queues. */
  routeByBucket?: boolean;
}

export interface BucketChoice {
  /** The size to render at. */
  width: number;
  height: number;
  /** Its bucket's id; absent for a small size kept as asked. */
  bucket?: string;
  /** Set when the size was snapped: what the request asked for. */
  snappedFrom?: { width: number; height: number };
}

/** Sizes below this share of the smallest bucket's area are not SDXL-scale renders and are kept as asked. */
const SMALL_SHARE = 0.5;
/** Sizes above this multiple of the largest bucket's area are deliberate large renders, kept as asked. */
const LARGE_FACTOR = 2;

export function chooseBucket(width: number, height: number, policy: BucketPolicy): BucketChoice {
  const exact = policy.buckets.find((b) => b.width === width && b.height === height);
  if (exact) return { width, height, bucket: bucketId(exact) };
  if (policy.strict) {
    const list = policy.buckets.map(bucketId).join(", ");
    throw new KilnError(
      "size_not_a_bucket",
      `The request body is invalid — width: ${width}×${height} is not one of this server's resolution buckets (${list}); send one of them as width and height.`,
      {
        status: 400,
        details: {
          errors: [{ field: "width", message: `${width}×${height} is not a resolution bucket; use one of ${list}` }],
          buckets: policy.buckets.map((b) => ({ width: b.width, height: b.height, id: bucketId(b) })),
        },
      },
    );
  }
  const areas = policy.buckets.map((b) => b.width * b.height);
  const area = width * height;
  if (areas.length === 0 || area < SMALL_SHARE * Math.min(...areas) || area > LARGE_FACTOR * Math.max(...areas))
    return { width, height };
  const aspect = Math.log(width / height);
  let best = policy.buckets[0]!;
  let bestDistance = Infinity;
  for (const b of policy.buckets) {
    const d = Math.abs(Math.log(b.width / b.height) - aspect);
    // 1e-9: ratios that are equal up to float noise count as a tie, which the larger bucket wins.
    if (
      d < bestDistance - 1e-9 ||
      (Math.abs(d - bestDistance) <= 1e-9 && b.width * b.height > best.width * best.height)
    ) {
      best = b;
      bestDistance = d;
    }
  }
  return { width: best.width, height: best.height, bucket: bucketId(best), snappedFrom: { width, height } };
}
