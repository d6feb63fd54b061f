import { z } from "@hono/zod-openapi";
import { KilnError, RENDER_MODES, webhookTargetSchema } from "@kiln/shared";
import { isNode, LineCounter, parseDocument } from "yaml";

/**
 * A batch manifest: which renders a run makes (prompts × seeds × sizes × modes over `defaults`),
 * when it runs, what it may cost and who hears when it ends. One zod schema, published in the
 * OpenAPI document; the render fields themselves are checked by the render schema after expansion,
 * so a manifest accepts exactly what `POST /v1/renders` accepts.
 */
const renderFields = z
  .record(z.string(), z.unknown())
  .openapi({ description: "Any `POST /v1/renders` field (prompt excepted); checked per render after expansion." });

export const MANIFEST_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const SIZE = /^(\d{2,5})x(\d{2,5})$/;

const promptItem = z.union([
  z.string().min(1, "a prompt must not be empty"),
  z
    .object({ prompt: z.string().min(1, "prompt must not be empty") })
    .catchall(z.unknown())
    .openapi({ description: "A prompt with its own render fields, overriding `defaults`." }),
]);

export const manifestSchema = z
  .object({
    id: z
      .string()
      .regex(MANIFEST_ID, "id must be 1–64 characters of a–z, 0–9, '.', '_' or '-', starting with a letter or digit")
      .openapi({ example: "nightly-catalogue" }),
    schedule: z
      .object({
        cron: z.string().min(1).openapi({ example: "0 2 * * *", description: "5- or 6-field cron (croner syntax)." }),
        timezone: z.string().default("UTC").openapi({ example: "Europe/Berlin", description: "IANA time zone." }),
        // Batch warm-up: the autoscaler sees the run coming (batches/warmup.ts).
        warmup_minutes: z
          .number()
          .int("warmup_minutes is a whole number of minutes")
          .min(1)
          .max(60, "warmup_minutes is at most 60")
          .optional()
          .openapi({
            example: 15,
            description:
              "Minutes before each fire to start GPU workers: a warm-up signal the fleet's autoscaling counts like waiting stages.",
          }),
      })
      .strict()
      .optional()
      .openapi({ description: "Absent: the manifest runs only when asked." }),
    defaults: renderFields.default({}),
    prompts: z.array(promptItem).min(1, "list at least one prompt"),
    seeds: z
      .array(
        z
          .number()
          .int("seeds must be whole numbers")
          .min(0)
          .max(2 ** 32 - 1),
      )
      .min(1, "list at least one seed, or leave seeds out for seed 0")
      .optional(),
    sizes: z.array(z.string().regex(SIZE, 'sizes are "WIDTHxHEIGHT" strings such as "1024x1024"')).min(1).optional(),
    modes: z.array(z.enum(RENDER_MODES)).min(1).optional(),
    expand: z.enum(["cartesian", "zip"]).default("cartesian").openapi({
      description:
        "cartesian: every combination; zip: the i-th prompt with the i-th seed, size and mode (lists of length 1 apply to all).",
    }),
    output: z
      .object({
        prefix: z
          .string()
          .regex(
            /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/,
            "output.prefix must be a relative path of letters, digits, '.', '_', '-' and '/'",
          )
          .refine((p) => !p.split("/").includes(".."), "output.prefix must not contain '..'"),
      })
      .strict()
      .optional(),
    caps: z
      .object({
        max_images: z.number().int().min(1).optional(),
        max_gpu_seconds: z.number().positive().optional(),
      })
      .strict()
      .optional(),
    notify: z
      .object({
        webhook: webhookTargetSchema.pick({ url: true }).optional(),
        slack: z
          .object({ channel: z.string().min(1) })
          .strict()
          .optional(),
        discord: z
          .object({ channel_id: z.string().regex(/^\d+$/, "discord.channel_id is a numeric snowflake") })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
    priority: z
      .number()
      .int()
      .min(0)
      .max(9)
      .default(5)
      .openapi({ description: "0–9; among one key's batches, higher is fed to the batch lane first." }),
  })
  .strict()
  .openapi("BatchManifest");

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestPath = (string | number)[];

/** One problem in a manifest: where (JSON path; line and column for YAML) and what is allowed. */
export interface ManifestIssue {
  field: string;
  message: string;
  line?: number;
  column?: number;
}

/** A 400 problem (`manifest_invalid`) listing each issue with its position. */
export class ManifestError extends KilnError {
  constructor(readonly issues: ManifestIssue[]) {
    const list = issues
      .map((i) => `${i.field}${i.line ? ` (line ${i.line}, column ${i.column})` : ""}: ${i.message}`)
      .join("; ");
    super("manifest_invalid", `The batch manifest is invalid — ${list}. Fix it and send it again.`, {
      status: 400,
      details: { errors: issues },
    });
  }
}

/** `$.prompts[3].steps` */
export function jsonPath(path: readonly PropertyKey[]): string {
  return "$" + path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
}

/** Where a path points in the source: YAML knows lines; JSON answers with the path alone. */
export type Locator = (path: readonly PropertyKey[]) => { line: number; column: number } | undefined;

export interface ParsedManifest {
  manifest: Manifest;
  locate: Locator;
}

/**
 * Parses a manifest from JSON or YAML text (JSON is YAML, but JSON errors are reported as JSON
 * paths), validates it, and returns it with a locator that later checks (render fields after
 * expansion) use to point at lines.
 */
export function parseManifest(text: string, format: "yaml" | "json"): ParsedManifest {
  let data: unknown;
  let locate: Locator = () => undefined;
  if (format === "json") {
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new ManifestError([{ field: "$", message: `not valid JSON: ${(e as Error).message}` }]);
    }
  } else {
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { lineCounter, prettyErrors: false });
    if (doc.errors.length > 0) {
      throw new ManifestError(
        doc.errors.map((e) => {
          const pos = e.linePos?.[0] ?? lineCounter.linePos(e.pos[0]);
          return {
            field: "$",
            message: `not valid YAML: ${e.message.split("\n")[0]}`,
            line: pos.line,
            column: pos.col,
          };
        }),
      );
    }
    data = doc.toJS();
    locate = (path) => {
      // The deepest node that exists: an unknown field's parent still has a place.
      for (let depth = path.length; depth >= 0; depth--) {
        const node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth) as unknown[], true);
        if (isNode(node) && node.range) {
          const pos = lineCounter.linePos(node.range[0]);
          return { line: pos.line, column: pos.col };
        }
      }
      return undefined;
    };
  }
  const result = manifestSchema.safeParse(data);
  if (!result.success) {
    throw new ManifestError(
      result.error.issues.map((issue) => {
        const path = issue.path as PropertyKey[];
        // An unknown key is reported on its parent; point at the key itself.
        const keys = issue.code === "unrecognized_keys" ? (issue as { keys: string[] }).keys : [];
        const at = keys.length === 1 ? [...path, keys[0]!] : path;
        return { field: jsonPath(at), message: issue.message, ...locate(at) };
      }),
    );
  }
  return { manifest: result.data, locate };
}

/** Guesses the format from the media type, then from the first character. */
export function manifestFormat(contentType: string | undefined, text: string): "yaml" | "json" {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.endsWith("yaml") || type.endsWith("yml")) return "yaml";
  if (type.endsWith("json")) return "json";
  return /^\s*[{[]/.test(text) ? "json" : "yaml";
}
