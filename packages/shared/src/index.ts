export * from "./errors.js";
export * from "./ports/index.js";
export * from "./schemas/job.js";
export * from "./schemas/render-request.js";
export * from "./schemas/stage-message.js";
export * from "./plan/render-plan.js";
export * from "./plan/stage-planner.js";
