// Fault hook for device-thread.test.ts: a device thread that runs this module dies when a call carries a feed
// named `crash`, as a thread whose native call took it down would.
import type { MessagePort } from "node:worker_threads";

import { serveDeviceThread as realServe } from "../../src/onnx/device-thread/device-thread-main.js";

export function serveDeviceThread(port: MessagePort): void {
  port.on("message", (m: { type: string; feeds?: Record<string, unknown> }) => {
    if (m.type === "run" && m.feeds?.crash) process.exit(3); // in a worker thread: ends the thread, not the process
  });
  realServe(port);
}
