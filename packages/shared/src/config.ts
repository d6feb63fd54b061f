import { z } from "zod";

import { parseBucket, type ResolutionBucket, SDXL_BUCKETS } from "./buckets/resolution-buckets.js";
import { KilnError } from "./errors.js";
import { readSstLinks, SST_LINKS } from "./sst-links.js";

const csv = <T extends string>(values: readonly [T, ...T[]]) =>
  z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean),
    )
    .pipe(z.array(z.enum(values)).min(1, `list at least one of ${values.join(", ")}`));

const boolish = z
  .enum(["1", "0", "true", "false", "yes", "no"], { message: "use true or false" })
  .transform((v) => v === "1" || v === "true" || v === "yes");

/** `kiln-base=https://sqs…/kiln-base,kiln-base-dlq=…`: logical queue name → SQS queue URL. */
const queueUrls = z
  .string()
  .transform((s) =>
    s
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean),
  )
  .pipe(z.array(z.string().regex(/^[A-Za-z0-9_-]+=https?:\/\/\S+$/, "use name=url pairs separated by commas")))
  .transform((pairs) =>
    Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)])),
  );

/**
 * Kiln's configuration: one typed object read from `KILN_*` environment variables (and `PORT`),
 * validated once at start-up. Every variable is documented in README.md's configuration table.
 * A setting is written twice: its variable and validation here, and its place in the typed object in
 * `toConfig` below; the `KilnConfig` type is derived from both (`z.output`).
 */
const configSchema = z.object({
  KILN_BACKEND: z.enum(["local", "aws"]).default("local"),
  KILN_DATA_DIR: z.string().min(1).default("./.kiln"),
  PORT: z.coerce.number().int().min(0).max(65535).default(8787),
  KILN_HOST: z.string().default("127.0.0.1"),
  KILN_PUBLIC_URL: z.string().url().optional(),
  // CLI client: the Kiln `kiln render` talks to (default: this box's KILN_PUBLIC_URL).
  KILN_API_URL: z.string().url().optional(),
  KILN_URL_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  KILN_MODEL_DIR: z.string().min(1).optional(),
  KILN_REFINER_DIR: z.string().min(1).optional(),
  KILN_PROVIDERS: csv(["tensorrt", "cuda", "cpu"] as const).default(["cpu"]),
  KILN_DEVICE_ID: z.coerce.number().int().min(0).default(0),
  KILN_STAGES: csv(["base", "refine"] as const).default(["base", "refine"]),
  // Default: `defaultWorkerConcurrency` (2 stages on a GPU worker's GPU, pipelined; else 1).
  KILN_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(16).optional(),
  // Pipelined worker (issue 15): claim and encode the next stage, finish the last one, while the GPU works.
  KILN_WORKER_PIPELINE: boolish.default(true),
  // Batching (issue 15): claim up to this many stages of one queue at once and denoise compatible ones in one
  // UNet batch; 10 is SQS's most per receive.
  KILN_WORKER_BATCH: z.coerce.number().int().min(1).max(10).default(1),
  // Finishing threads (issue 15, duty cycle): watermark and encode images off the event loop; 0 = in-line.
  KILN_FINISHING_THREADS: z.coerce.number().int().min(0).max(8).default(1),
  // Device thread (issue 15, duty cycle): the UNet and VAE sessions run on their own thread, off the event loop.
  KILN_GPU_THREAD: boolish.default(true),
  KILN_VISIBILITY_SECONDS: z.coerce.number().int().min(2).max(43_200).default(60),
  KILN_DRAIN_SECONDS: z.coerce.number().int().min(0).max(3600).default(25),
  KILN_MAX_RECEIVES: z.coerce.number().int().min(1).max(1000).default(5),
  KILN_WORKER_PORT: z.coerce.number().int().min(0).max(65535).default(8788),
  KILN_LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  KILN_DOWNLOAD_URL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .max(7 * 86_400)
    .default(3600),
  KILN_RETENTION_HOURS: z.coerce
    .number()
    .min(1 / 60)
    .max(24 * 365)
    .default(24),
  KILN_MAX_SIDE: z.coerce.number().int().min(64).max(8192).default(2048),
  KILN_MIN_SIDE: z.coerce.number().int().min(8).max(8192).default(256),
  KILN_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(64 * 1024),
  // Image inputs (img2img, inpaint, outpaint): their own bounded body limit instead of a larger global one.
  KILN_MAX_IMAGE_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(100 * 1024 * 1024)
    .default(10 * 1024 * 1024),
  KILN_MAX_IMAGE_PIXELS: z.coerce
    .number()
    .int()
    .min(64 * 64)
    .default(4096 * 4096),
  KILN_IMAGE_FETCH_SECONDS: z.coerce.number().min(1).max(120).default(10),
  KILN_MAX_PIXELS: z.coerce
    .number()
    .int()
    .min(64 * 64)
    .default(2048 * 2048),
  KILN_MAX_RETENTION_HOURS: z.coerce
    .number()
    .min(1 / 60)
    .max(24 * 365)
    .default(24 * 30),
  KILN_AWS_REGION: z.string().default("us-east-1"),
  KILN_AWS_ENDPOINT: z.string().url().optional(),
  KILN_SQS_ENDPOINT: z.string().url().optional(),
  KILN_S3_ENDPOINT: z.string().url().optional(),
  KILN_DYNAMO_ENDPOINT: z.string().url().optional(),
  KILN_QUEUE_URLS: queueUrls.optional(),
  KILN_EVENT_LOG: z.string().min(1).optional(),
  KILN_QUEUE_PREFIX: z.string().default(""),
  KILN_BUCKET: z.string().optional(),
  KILN_TABLE: z.string().optional(),
  KILN_TINY_MODELS: boolish.default(true),
  // Reference models: which generated models a worker uses when no model dir is set.
  KILN_BUILTIN_MODELS: z.enum(["reference", "tiny"]).default("reference"),
  // Torch-exact noise: which of ATen's CPU Box–Muller kernels seeded noise reproduces.
  KILN_NOISE_KERNEL: z.enum(["avx2", "scalar"]).default("avx2"),
  KILN_RATE_LIMIT_RPS: z.coerce.number().min(0).max(100_000).default(0),
  KILN_RATE_LIMIT_BURST: z.coerce.number().int().min(1).max(1_000_000).optional(),
  KILN_CONCURRENT_JOBS: z.coerce.number().int().min(0).max(1_000_000).default(0),
  KILN_IMAGES_PER_DAY: z.coerce.number().int().min(0).max(1_000_000_000).default(0),
  KILN_WEBHOOK_ALLOW_PRIVATE: boolish.default(false),
  // SDXL invisible watermark: whether a request may turn it off.
  KILN_ALLOW_UNWATERMARKED: boolish.default(false),
  KILN_WEBHOOK_ALLOWED_HOSTS: z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((x) => x.trim().toLowerCase())
        .filter(Boolean),
    )
    .default([]),
  KILN_WEBHOOK_RETRY_HOURS: z.coerce
    .number()
    .min(1 / 60)
    .max(72)
    .default(24),
  KILN_WEBHOOK_BACKOFF_SECONDS: z.coerce.number().int().min(1).max(900).default(5),
  KILN_WEBHOOK_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(60).default(10),
  // The `kiln` command and its benchmarks.
  KILN_START_DEMO: boolish.default(true),
  KILN_API_KEY: z.string().min(1).optional(),
  KILN_BENCH_HANDOFFS: z.coerce.number().int().min(1).max(1_000_000).default(200),
  KILN_BENCH_SECONDS: z.coerce.number().int().min(1).max(3600).default(10),
  // Chat channels (Discord, Slack): a bot whose secrets are unset answers 404 on its routes.
  KILN_DISCORD_APPLICATION_ID: z
    .string()
    .regex(/^\d{5,25}$/, "must be the application's numeric id")
    .optional(),
  KILN_DISCORD_PUBLIC_KEY: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "must be the application's Ed25519 public key, 64 hex characters")
    .optional(),
  KILN_DISCORD_BOT_TOKEN: z.string().min(1).optional(),
  KILN_DISCORD_API_URL: z.string().url().default("https://discord.com/api/v10"),
  KILN_SLACK_SIGNING_SECRET: z.string().min(8).optional(),
  KILN_SLACK_BOT_TOKEN: z.string().min(1).optional(),
  KILN_SLACK_API_URL: z.string().url().default("https://slack.com/api/"),
  KILN_CHAT_KEY_ID: z.string().min(1).optional(),
  KILN_CHAT_USER_RENDERS_PER_HOUR: z.coerce.number().int().min(0).max(100_000).default(30),
  KILN_CHAT_GUILD_RENDERS_PER_HOUR: z.coerce.number().int().min(0).max(1_000_000).default(300),
  KILN_CHAT_BLOCKED_WORDS: z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((x) => x.trim().toLowerCase())
        .filter(Boolean),
    )
    .default([]),
  KILN_CHAT_BUTTONS_ANYONE: boolish.default(false),
  // Batches
  KILN_BATCH_STEP_SECONDS: z.coerce.number().positive().max(100).default(0.12),
  KILN_BATCH_WINDOW: z.coerce.number().int().min(1).max(100_000).default(200),
  KILN_BATCH_SCHEDULER: boolish.default(true),
  KILN_BATCH_TICK_SECONDS: z.coerce
    .number()
    .int()
    .refine((n) => [1, 2, 3, 5, 10, 15, 20, 30, 60].includes(n), "must be one of 1, 2, 3, 5, 10, 15, 20, 30, 60")
    .default(5),
  // Resolution buckets and model sync (TensorRT engines per bucket; cold start from S3).
  KILN_BUCKETS: z
    .string()
    .transform((s, ctx) => {
      const out: ResolutionBucket[] = [];
      for (const part of s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean)) {
        const b = parseBucket(part);
        if (!b)
          ctx.addIssue({ code: "custom", message: `"${part}" is not WIDTHxHEIGHT with sides that are multiples of 8` });
        else out.push(b);
      }
      if (out.length === 0) ctx.addIssue({ code: "custom", message: "list at least one bucket, e.g. 1024x1024" });
      return out;
    })
    .optional(),
  KILN_STRICT_BUCKETS: boolish.default(false),
  KILN_BUCKET_ROUTING: z.enum(["shared", "lanes"]).default("shared"),
  KILN_WORKER_BUCKETS: z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean),
    )
    .pipe(
      z
        .array(z.string().regex(/^(all|\d{2,5}x\d{2,5})$/, "use all, or bucket ids such as 1024x1024"))
        .min(1, "use all, or bucket ids such as 1024x1024"),
    )
    .default(["all"]),
  KILN_MODEL_CACHE_DIR: z.string().min(1).optional(),
  KILN_SYNC_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(8),
  KILN_SYNC_PART_MIB: z.coerce.number().int().min(1).max(1024).default(16),
  // Batch schedules on EventBridge Scheduler (AWS): one schedule per stored manifest, set together.
  KILN_BATCH_SCHEDULE_GROUP: z.string().min(1).optional(),
  KILN_BATCH_SCHEDULER_ROLE_ARN: z.string().startsWith("arn:", "must be an IAM role ARN").optional(),
  KILN_BATCH_TRIGGER_ARN: z.string().startsWith("arn:", "must be the batch trigger function's ARN").optional(),
  KILN_SCHEDULER_ENDPOINT: z.string().url().optional(),
  // Crash-safe submit: fault tests' pause points (a control directory); never set in production.
  KILN_TEST_HOOKS: z.string().min(1).optional(),
});

export type KilnConfigEnv = z.infer<typeof configSchema>;

/** Rules between variables; each names the variables to change. */
function checkCombinations(e: KilnConfigEnv, ctx: z.RefinementCtx): void {
  // Batch schedules on EventBridge Scheduler: all three settings or none.
  const scheduleSettings = [
    ["KILN_BATCH_SCHEDULE_GROUP", e.KILN_BATCH_SCHEDULE_GROUP],
    ["KILN_BATCH_SCHEDULER_ROLE_ARN", e.KILN_BATCH_SCHEDULER_ROLE_ARN],
    ["KILN_BATCH_TRIGGER_ARN", e.KILN_BATCH_TRIGGER_ARN],
  ] as const;
  const scheduleMissing = scheduleSettings.filter(([, v]) => !v).map(([n]) => n);
  if (scheduleMissing.length > 0 && scheduleMissing.length < scheduleSettings.length) {
    ctx.addIssue({
      code: "custom",
      params: { combination: true },
      path: [scheduleMissing[0]!],
      message: `EventBridge batch schedules need KILN_BATCH_SCHEDULE_GROUP, KILN_BATCH_SCHEDULER_ROLE_ARN and KILN_BATCH_TRIGGER_ARN together: set ${scheduleMissing.join(", ")} too (infra/schedules.ts declares them), or unset the others.`,
    });
  }
  if (e.KILN_MIN_SIDE > e.KILN_MAX_SIDE) {
    ctx.addIssue({
      code: "custom",
      params: { combination: true },
      path: ["KILN_MIN_SIDE"],
      message: `KILN_MIN_SIDE (${e.KILN_MIN_SIDE}) must not exceed KILN_MAX_SIDE (${e.KILN_MAX_SIDE}).`,
    });
  }
  if (e.KILN_RETENTION_HOURS > e.KILN_MAX_RETENTION_HOURS) {
    ctx.addIssue({
      code: "custom",
      params: { combination: true },
      path: ["KILN_RETENTION_HOURS"],
      message: `KILN_RETENTION_HOURS (${e.KILN_RETENTION_HOURS}) must not exceed KILN_MAX_RETENTION_HOURS (${e.KILN_MAX_RETENTION_HOURS}).`,
    });
  }
  // Resolution buckets: a worker can only hold engines of configured buckets.
  if (e.KILN_BUCKETS && !e.KILN_WORKER_BUCKETS.includes("all")) {
    const ids = new Set(e.KILN_BUCKETS.map((b) => `${b.width}x${b.height}`));
    const unknown = e.KILN_WORKER_BUCKETS.filter((b) => !ids.has(b));
    if (unknown.length)
      ctx.addIssue({
        code: "custom",
        params: { combination: true },
        path: ["KILN_WORKER_BUCKETS"],
        message: `KILN_WORKER_BUCKETS lists ${unknown.join(", ")}, which KILN_BUCKETS does not; list only configured buckets (or all).`,
      });
  } else if (!e.KILN_WORKER_BUCKETS.includes("all")) {
    const ids = new Set(SDXL_BUCKETS.map((b) => `${b.width}x${b.height}`));
    const unknown = e.KILN_WORKER_BUCKETS.filter((b) => !ids.has(b));
    if (unknown.length)
      ctx.addIssue({
        code: "custom",
        params: { combination: true },
        path: ["KILN_WORKER_BUCKETS"],
        message: `KILN_WORKER_BUCKETS lists ${unknown.join(", ")}, which are not SDXL's standard buckets (KILN_BUCKETS is unset); list only configured buckets (or all).`,
      });
  }
}

/** The typed object code reads, from the validated variables. */
function toConfig(e: KilnConfigEnv) {
  return {
    backend: e.KILN_BACKEND,
    /** Resolution buckets: the sizes engines exist for, and how jobs are mapped to them and routed. */
    buckets: {
      list: e.KILN_BUCKETS ?? [...SDXL_BUCKETS],
      strict: e.KILN_STRICT_BUCKETS,
      /** `shared`: one queue per stage kind and lane; `lanes`: one per bucket too (see docs/architecture.md). */
      routing: e.KILN_BUCKET_ROUTING,
      /** Buckets this worker takes in `lanes` routing; `all` (the default, and any worker without engines) takes every one. */
      worker: e.KILN_WORKER_BUCKETS.includes("all") ? ("all" as const) : e.KILN_WORKER_BUCKETS,
    },
    /** Model folders given as s3:// are synced here (default `<data dir>/models/s3`); parallel ranged GETs. */
    modelSync: {
      cacheDir: e.KILN_MODEL_CACHE_DIR,
      concurrency: e.KILN_SYNC_CONCURRENCY,
      partBytes: e.KILN_SYNC_PART_MIB * 1024 * 1024,
    },
    /** Fault tests' pause-point control directory (KILN_TEST_HOOKS); undefined in production. */
    testHooksDir: e.KILN_TEST_HOOKS,
    dataDir: e.KILN_DATA_DIR,
    port: e.PORT,
    host: e.KILN_HOST,
    /** Base URL clients reach the API at; used in links and local download URLs. */
    publicUrl: (
      e.KILN_PUBLIC_URL ?? `http://${e.KILN_HOST === "0.0.0.0" ? "127.0.0.1" : e.KILN_HOST}:${e.PORT}`
    ).replace(/\/$/, ""),
    /** KILN_PUBLIC_URL when it was set: hosts that can see each request's domain use that domain otherwise. */
    explicitPublicUrl: e.KILN_PUBLIC_URL?.replace(/\/$/, ""),
    /** Base URL the CLI client (`kiln render`) calls; KILN_API_URL, else publicUrl. */
    apiUrl: (
      e.KILN_API_URL ??
      e.KILN_PUBLIC_URL ??
      `http://${e.KILN_HOST === "0.0.0.0" ? "127.0.0.1" : e.KILN_HOST}:${e.PORT}`
    ).replace(/\/$/, ""),
    /** Secret signing local download URLs; generated per data dir when not set. */
    urlSecret: e.KILN_URL_SECRET,
    modelDir: e.KILN_MODEL_DIR,
    refinerDir: e.KILN_REFINER_DIR,
    /** Generate and use the tiny test models when no model dir is configured. */
    allowTinyModels: e.KILN_TINY_MODELS,
    /** Which generated models: the reference pair (exact denoiser of a picture set) or the tiny random ones. */
    builtinModels: e.KILN_BUILTIN_MODELS,
    /** Box–Muller kernel of seeded noise: torch on x86-64 with AVX2 (`avx2`) or without (`scalar`, e.g. ARM). */
    noiseKernel: e.KILN_NOISE_KERNEL,
    providers: e.KILN_PROVIDERS,
    deviceId: e.KILN_DEVICE_ID,
    stages: e.KILN_STAGES,
    /** Stages at once (pipelined: on the GPU at once); KILN_WORKER_CONCURRENCY, else `defaultWorkerConcurrency`. */
    workerConcurrency: e.KILN_WORKER_CONCURRENCY ?? defaultWorkerConcurrency(e.KILN_PROVIDERS, e.KILN_WORKER_PIPELINE),
    /** Claim ahead and finish behind the GPU's work (KILN_WORKER_PIPELINE). */
    workerPipeline: e.KILN_WORKER_PIPELINE,
    /** Stages claimed together and denoised in one UNet batch where compatible (KILN_WORKER_BATCH; 1 = off). */
    workerBatch: e.KILN_WORKER_BATCH,
    /** Threads that watermark, composite and encode decoded images (KILN_FINISHING_THREADS; 0: on the main thread). */
    finishingThreads: e.KILN_FINISHING_THREADS,
    /** UNet and VAE sessions on a device thread per GPU (KILN_GPU_THREAD; false: on the main thread). */
    gpuThread: e.KILN_GPU_THREAD,
    visibilitySeconds: e.KILN_VISIBILITY_SECONDS,
    drainSeconds: e.KILN_DRAIN_SECONDS,
    maxReceives: e.KILN_MAX_RECEIVES,
    workerPort: e.KILN_WORKER_PORT,
    logLevel: e.KILN_LOG_LEVEL,
    downloadUrlSeconds: e.KILN_DOWNLOAD_URL_SECONDS,
    retentionHours: e.KILN_RETENTION_HOURS,
    limits: {
      minSide: e.KILN_MIN_SIDE,
      maxSide: e.KILN_MAX_SIDE,
      maxBodyBytes: e.KILN_MAX_BODY_BYTES,
      maxPixels: e.KILN_MAX_PIXELS,
      maxRetentionHours: e.KILN_MAX_RETENTION_HOURS,
      /** SDXL invisible watermark: a request may send `watermark: false` (KILN_ALLOW_UNWATERMARKED). */
      allowUnwatermarked: e.KILN_ALLOW_UNWATERMARKED,
    },
    imageInputs: {
      maxBytes: e.KILN_MAX_IMAGE_BYTES,
      maxPixels: e.KILN_MAX_IMAGE_PIXELS,
      fetchTimeoutMs: e.KILN_IMAGE_FETCH_SECONDS * 1000,
    },
    aws: {
      region: e.KILN_AWS_REGION,
      /** One endpoint for SQS, S3 and DynamoDB (a stand-in); the per-service ones win over it. */
      endpoint: e.KILN_AWS_ENDPOINT,
      sqsEndpoint: e.KILN_SQS_ENDPOINT,
      s3Endpoint: e.KILN_S3_ENDPOINT,
      dynamoEndpoint: e.KILN_DYNAMO_ENDPOINT,
      queuePrefix: e.KILN_QUEUE_PREFIX,
      /** Logical queue name → URL, from KILN_QUEUE_URLS or SST links; others are found by GetQueueUrl(prefix + name). */
      queueUrls: (e.KILN_QUEUE_URLS ?? {}) as Record<string, string>,
      /** From KILN_BUCKET, else the SST link (`loadConfig` fills it in). */
      bucket: e.KILN_BUCKET,
      table: e.KILN_TABLE,
    },
    /** Worker: append every stored job transition as one JSON line to this file (an audit trail). */
    eventLog: e.KILN_EVENT_LOG,
    /** Defaults for keys whose record does not set a limit; 0 = no limit (burst is at least 1). */
    keyLimits: {
      requestsPerSecond: e.KILN_RATE_LIMIT_RPS,
      burst: e.KILN_RATE_LIMIT_BURST ?? Math.max(1, Math.ceil(2 * e.KILN_RATE_LIMIT_RPS)),
      concurrentJobs: e.KILN_CONCURRENT_JOBS,
      imagesPerDay: e.KILN_IMAGES_PER_DAY,
    },
    webhooks: {
      /** Deliver to private, loopback and link-local addresses too (tests, closed networks). */
      allowPrivate: e.KILN_WEBHOOK_ALLOW_PRIVATE,
      /** Host names, IP addresses or CIDR ranges allowed even when they are private. */
      allowedHosts: e.KILN_WEBHOOK_ALLOWED_HOSTS,
      /** Give up on a delivery this long after its first attempt. */
      retryHours: e.KILN_WEBHOOK_RETRY_HOURS,
      /** Wait after the first failed attempt; doubles per attempt (capped at an hour). */
      backoffSeconds: e.KILN_WEBHOOK_BACKOFF_SECONDS,
      timeoutSeconds: e.KILN_WEBHOOK_TIMEOUT_SECONDS,
    },
    // The `kiln` command and its benchmarks.
    cli: {
      /** `kiln start` renders one demo image through the public API after starting. */
      startDemo: e.KILN_START_DEMO,
      /** The key `kiln render` sends when `--key` is not given. */
      apiKey: e.KILN_API_KEY,
    },
    bench: {
      /** Hand-overs per family in `kiln bench handoff`. */
      handoffs: e.KILN_BENCH_HANDOFFS,
      /** Seconds per load run in `kiln bench api`. */
      apiSeconds: e.KILN_BENCH_SECONDS,
    },
    /** Batches: estimate rate, per-key window in the batch lane, and the in-process scheduler. */
    batches: {
      /** Seconds per denoising step per megapixel when no stage has been measured yet. */
      stepSeconds: e.KILN_BATCH_STEP_SECONDS,
      /** Renders of one key in the batch lane (queued or running) at once. */
      window: e.KILN_BATCH_WINDOW,
      /** Run the croner scheduler in the API process (the embedded trigger); off where EventBridge fires manifests. */
      scheduler:
        e.KILN_BATCH_SCHEDULER &&
        !(e.KILN_BATCH_SCHEDULE_GROUP && e.KILN_BATCH_SCHEDULER_ROLE_ARN && e.KILN_BATCH_TRIGGER_ARN),
      tickSeconds: e.KILN_BATCH_TICK_SECONDS,
      /** Per-manifest EventBridge Scheduler schedules (AWS); absent: the in-process tick fires manifests. */
      eventBridge:
        e.KILN_BATCH_SCHEDULE_GROUP && e.KILN_BATCH_SCHEDULER_ROLE_ARN && e.KILN_BATCH_TRIGGER_ARN
          ? {
              group: e.KILN_BATCH_SCHEDULE_GROUP,
              roleArn: e.KILN_BATCH_SCHEDULER_ROLE_ARN,
              triggerArn: e.KILN_BATCH_TRIGGER_ARN,
              endpoint: e.KILN_SCHEDULER_ENDPOINT ?? e.KILN_AWS_ENDPOINT,
            }
          : undefined,
    },
    /** Chat channels; a platform is enabled when its secrets and KILN_CHAT_KEY_ID are set. */
    chat: {
      /** The API key whose quotas and ownership chat renders use (`kiln keys create --name chat`). */
      keyId: e.KILN_CHAT_KEY_ID,
      /** Per chat user and per Discord guild / Slack workspace, renders an hour; 0 = no limit. */
      userRendersPerHour: e.KILN_CHAT_USER_RENDERS_PER_HOUR,
      guildRendersPerHour: e.KILN_CHAT_GUILD_RENDERS_PER_HOUR,
      /** Prompts containing one of these words (lower case) are refused everywhere. */
      blockedWords: e.KILN_CHAT_BLOCKED_WORDS,
      /** Anyone in the channel may press a result's buttons (default: only the requester). */
      buttonsAnyone: e.KILN_CHAT_BUTTONS_ANYONE,
      discord: {
        applicationId: e.KILN_DISCORD_APPLICATION_ID,
        publicKey: e.KILN_DISCORD_PUBLIC_KEY?.toLowerCase(),
        botToken: e.KILN_DISCORD_BOT_TOKEN,
        apiUrl: e.KILN_DISCORD_API_URL.replace(/\/+$/, ""),
      },
      slack: {
        signingSecret: e.KILN_SLACK_SIGNING_SECRET,
        botToken: e.KILN_SLACK_BOT_TOKEN,
        apiUrl: e.KILN_SLACK_API_URL.endsWith("/") ? e.KILN_SLACK_API_URL : `${e.KILN_SLACK_API_URL}/`,
      },
    },
  };
}

const kilnConfigSchema = configSchema.superRefine(checkCombinations).transform(toConfig);

export type KilnConfig = z.output<typeof kilnConfigSchema>;
export type ChatConfig = KilnConfig["chat"];

/** Reads and validates the configuration; throws one KilnError listing every bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): KilnConfig {
  const picked = Object.fromEntries(
    Object.entries(env).filter(([k, v]) => (k.startsWith("KILN_") || k === "PORT") && v !== undefined && v !== ""),
  );
  const parsed = kilnConfigSchema.safeParse(picked);
  if (!parsed.success) {
    // A rule between variables (checkCombinations) is reported alone, in its own words.
    const combination = parsed.error.issues.find((i) => i.code === "custom" && i.params?.combination === true);
    if (combination) throw new KilnError("config_invalid", combination.message);
    const lines = parsed.error.issues.map(
      (i) => `  ${i.path.join(".")}=${JSON.stringify(picked[String(i.path[0])] ?? "")}: ${i.message}`,
    );
    throw new KilnError(
      "config_invalid",
      `Kiln's configuration is invalid; fix these environment variables:\n${lines.join("\n")}`,
    );
  }
  const config = parsed.data;
  const linked = readSstLinks(env);
  config.aws.bucket ??= linked.bucket;
  config.aws.table ??= linked.table;
  config.aws.queueUrls = { ...linked.queueUrls, ...config.aws.queueUrls };
  if (config.backend === "aws" && (!config.aws.bucket || !config.aws.table)) {
    throw new KilnError(
      "config_invalid",
      `KILN_BACKEND=aws needs KILN_BUCKET and KILN_TABLE, or the SST links ${SST_LINKS.bucket} and ${SST_LINKS.table} (environment variables SST_RESOURCE_${SST_LINKS.bucket} and SST_RESOURCE_${SST_LINKS.table}).`,
    );
  }
  return config;
}

/**
 * The stages a worker runs at once when KILN_WORKER_CONCURRENCY is not set. A pipelined worker with a GPU provider
 * keeps two stages on the GPU: each UNet call is followed by ~1 ms of guidance, scheduler step and thread hops on
 * the CPU before the next, and a second stage's call, queued behind it, fills that gap (issue 15: 1024² ensemble
 * on a saturated worker, ~95 % busy with one stage, ≥ 98 % with two; docs/benchmarks.md). The two stages share the
 * GPU step by step, so with exactly two renders and nothing queued behind them the first finishes about one render
 * later (set 1 where that matters more than throughput). On the CPU provider there is no idle device to fill: two
 * stages would only share the same cores.
 */
export function defaultWorkerConcurrency(providers: readonly string[], pipelined: boolean): number {
  return pipelined && providers.some((p) => p === "cuda" || p === "tensorrt") ? 2 : 1;
}
