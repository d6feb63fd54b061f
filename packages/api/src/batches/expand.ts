import {
  DEFAULT_RENDER_LIMITS,
  type RenderLimits,
  type RenderMode,
  type RenderRequest,
  renderRequestSchema,
  sha256Hex,
} from "@kiln/shared";

import { jsonPath, type Locator, type Manifest, ManifestError, type ManifestIssue, SIZE } from "./manifest.js";

/** One render a manifest asks for, with where each of its varying values came from. */
export interface BatchItem {
  /** Position in the expansion (stable for a given manifest). */
  index: number;
  request: RenderRequest;
  /** Stable per owner, manifest and canonical parameters: the render's job id (first attempt). */
  key: string;
  prompt: string;
  seed: number;
  width: number;
  height: number;
  mode: RenderMode;
}

/** Fields that change neither the picture nor where it goes: left out of the render's identity. */
const NOT_IDENTITY = new Set(["webhook", "deadline_seconds", "retention_hours"]);

interface Axis<T> {
  values: T[];
  /** Manifest path of value i, or undefined when the value is a default. */
  path: (i: number) => (string | number)[] | undefined;
}

/**
 * Expands a manifest into renders: `cartesian` makes every combination of prompts × seeds × sizes
 * × modes; `zip` pairs the i-th of each list, where a list of one applies to every render. Each
 * render is checked with the render schema; a problem is reported at the manifest field it came
 * from (a prompt's override, `defaults`, `sizes[j]` …).
 */
export async function expandManifest(
  manifest: Manifest,
  options: { ownerKeyId: string; limits?: RenderLimits; locate?: Locator },
): Promise<BatchItem[]> {
  const schema = renderRequestSchema(options.limits ?? DEFAULT_RENDER_LIMITS);
  const prompts: Axis<{ prompt: string; overrides: Record<string, unknown> }> = {
    values: manifest.prompts.map((p) => {
      if (typeof p === "string") return { prompt: p, overrides: {} };
      const { prompt, ...overrides } = p;
      return { prompt, overrides };
    }),
    path: (i) => ["prompts", i],
  };
  const seeds: Axis<number | undefined> = manifest.seeds
    ? { values: manifest.seeds, path: (i) => ["seeds", i] }
    : { values: [undefined], path: () => undefined };
  const sizes: Axis<[number, number] | undefined> = manifest.sizes
    ? {
        values: manifest.sizes.map((s) => {
          const m = SIZE.exec(s)!;
          return [Number(m[1]), Number(m[2])];
        }),
        path: (i) => ["sizes", i],
      }
    : { values: [undefined], path: () => undefined };
  const modes: Axis<RenderMode | undefined> = manifest.modes
    ? { values: manifest.modes, path: (i) => ["modes", i] }
    : { values: [undefined], path: () => undefined };

  const combos = combine(manifest.expand, [prompts, seeds, sizes, modes], options.locate);
  const issues: ManifestIssue[] = [];
  const items: BatchItem[] = [];
  for (const [index, [pi, si, zi, mi]] of combos.entries()) {
    const { prompt, overrides } = prompts.values[pi]!;
    const size = sizes.values[zi];
    const body: Record<string, unknown> = {
      ...manifest.defaults,
      ...overrides,
      prompt,
      ...(seeds.values[si] !== undefined
        ? { seed: seeds.values[si] }
        : { seed: overrides.seed ?? manifest.defaults.seed ?? 0 }),
      ...(size ? { width: size[0], height: size[1] } : {}),
      ...(modes.values[mi] !== undefined ? { mode: modes.values[mi] } : {}),
    };
    const parsed = schema.safeParse(body);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const field = String(
          issue.path[0] ?? (issue.code === "unrecognized_keys" ? (issue as { keys: string[] }).keys[0] : ""),
        );
        const source = sourceOf(field, {
          overrides,
          defaults: manifest.defaults,
          pi,
          si,
          zi,
          mi,
          prompts,
          seeds,
          sizes,
          modes,
        });
        const where = jsonPath(source);
        if (issues.some((i) => i.field === where && i.message === issue.message)) continue;
        issues.push({
          field: where,
          message: `${field ? `${field}: ` : ""}${issue.message}`,
          ...options.locate?.(source),
        });
      }
      continue;
    }
    const request = parsed.data;
    items.push({
      index,
      request,
      key: await renderKey(options.ownerKeyId, manifest.id, request),
      prompt,
      seed: request.seed!,
      width: request.width ?? 1024, // the planner's default size for text-to-image
      height: request.height ?? 1024,
      mode: request.mode,
    });
  }
  if (issues.length > 0) throw new ManifestError(issues.slice(0, 50));
  // Two combinations that are the same render (a repeated seed) would share one id: keep the first.
  const seen = new Set<string>();
  return items.filter((item) => !seen.has(item.key) && seen.add(item.key));
}

function sourceOf(
  field: string,
  at: {
    overrides: Record<string, unknown>;
    defaults: Record<string, unknown>;
    pi: number;
    si: number;
    zi: number;
    mi: number;
    prompts: Axis<unknown>;
    seeds: Axis<unknown>;
    sizes: Axis<unknown>;
    modes: Axis<unknown>;
  },
): (string | number)[] {
  if (field === "prompt") return at.prompts.path(at.pi)!;
  if (field === "seed" && at.seeds.path(at.si)) return at.seeds.path(at.si)!;
  if ((field === "width" || field === "height") && at.sizes.path(at.zi)) return at.sizes.path(at.zi)!;
  if (field === "mode" && at.modes.path(at.mi)) return at.modes.path(at.mi)!;
  if (field in at.overrides) return [...at.prompts.path(at.pi)!, field];
  if (field in at.defaults) return ["defaults", field];
  return field ? ["defaults", field] : ["defaults"];
}

function combine(
  expand: "cartesian" | "zip",
  axes: Axis<unknown>[],
  locate: Locator | undefined,
): [number, number, number, number][] {
  const lengths = axes.map((a) => a.values.length);
  if (expand === "zip") {
    const n = Math.max(...lengths);
    const names = ["prompts", "seeds", "sizes", "modes"];
    const issues: ManifestIssue[] = [];
    lengths.forEach((len, i) => {
      if (len !== 1 && len !== n) {
        issues.push({
          field: jsonPath([names[i]!]),
          message: `expand: zip pairs lists of equal length (or of length 1): ${names[i]} has ${len}, the longest list has ${n}`,
          ...locate?.([names[i]!]),
        });
      }
    });
    if (issues.length) throw new ManifestError(issues);
    return Array.from(
      { length: n },
      (_, k) => lengths.map((len) => (len === 1 ? 0 : k)) as [number, number, number, number],
    );
  }
  const out: [number, number, number, number][] = [];
  for (let p = 0; p < lengths[0]!; p++)
    for (let s = 0; s < lengths[1]!; s++)
      for (let z = 0; z < lengths[2]!; z++) for (let m = 0; m < lengths[3]!; m++) out.push([p, s, z, m]);
  return out;
}

/** Number of renders before building them, so a cap can refuse a huge manifest cheaply. */
export function expansionCount(manifest: Manifest): number {
  const lengths = [
    manifest.prompts.length,
    manifest.seeds?.length ?? 1,
    manifest.sizes?.length ?? 1,
    manifest.modes?.length ?? 1,
  ];
  return manifest.expand === "zip" ? Math.max(...lengths) : lengths.reduce((a, b) => a * b, 1);
}

/** JSON with sorted keys at every level: the same parameters always give the same text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

/** `job_b<24 hex>`: owner, manifest id and the render's canonical parameters (defaults applied). */
export async function renderKey(ownerKeyId: string, manifestId: string, request: RenderRequest): Promise<string> {
  const identity = Object.fromEntries(Object.entries(request).filter(([k]) => !NOT_IDENTITY.has(k)));
  return `job_b${(await sha256Hex(`${ownerKeyId}\n${manifestId}\n${canonicalJson(identity)}`)).slice(0, 24)}`;
}
