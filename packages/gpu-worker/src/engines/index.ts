/** TensorRT engines: EPContext wrappers, the engine store, builds and the worker's engine sessions. */
export * from "./build-plan.js";
export * from "./engine-builder.js";
export * from "./engine-key.js";
export * from "./engine-store.js";
export * from "./epcontext-model.js";
export * from "./toolchain.js";
export * from "./engine-sessions.js";
