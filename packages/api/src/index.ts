export { createApp, type KilnApp } from "./app.js";
export type { ApiDeps } from "./deps.js";
export { submitRender } from "./render-service.js";
export { problem } from "./problem.js";
