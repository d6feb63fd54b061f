// Node-only helpers of the shared package (entry points and adapters import these; the API core does not).
export * from "./logging.js";
export * from "./testing/pause-points.js";
