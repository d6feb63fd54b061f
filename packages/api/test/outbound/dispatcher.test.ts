import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import type { Ports } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import {
  type AttemptOutcome,
  type DeliveryHandler,
  MAX_HOP_SECONDS,
  OutboundDispatcher,
} from "../../src/outbound/dispatcher.js";

/** A test channel: each message scripts what its attempts answer, and every attempt is recorded. */
interface Scripted {
  id: string;
  attempt: number;
  answers: ("ok" | "retry" | "give-up")[];
  notBefore?: number;
}

const QUEUE = "kiln-test-outbound";
const logger = createLogger({ level: process.env.KILN_TEST_LOG ?? "silent" });

async function until(check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("outbound dispatcher", () => {
  let local: TempLocalPorts;
  let ports: Ports;
  let dispatcher: OutboundDispatcher<Scripted> | undefined;
  let attempts: { id: string; attempt: number }[];

  const handler: DeliveryHandler<Scripted> = {
    queue: QUEUE,
    name: "test message",
    parse: (body) => {
      const m = body as Partial<Scripted> | null;
      return typeof m?.id === "string" && Array.isArray(m.answers) ? (m as Scripted) : undefined;
    },
    describe: (m) => ({ id: m.id, attempt: m.attempt }),
    notBefore: (m) => m.notBefore,
    async attempt(m): Promise<AttemptOutcome<Scripted>> {
      attempts.push({ id: m.id, attempt: m.attempt });
      const answer = m.answers[m.attempt - 1] ?? "give-up";
      if (answer === "ok") return { kind: "delivered" };
      if (answer === "give-up") return { kind: "give-up", reason: "scripted" };
      return { kind: "retry-after", ms: 0, next: { ...m, attempt: m.attempt + 1 } };
    },
  };

  const start = (now?: () => number) => {
    dispatcher = new OutboundDispatcher(handler, {
      queue: ports.queue,
      logger,
      attemptTimeoutMs: 1000,
      pollWaitSeconds: 1,
      now,
    });
    dispatcher.start();
  };
  const settled = async () => {
    const d = await ports.queue.depth(QUEUE);
    return d.visible + d.inFlight + d.delayed === 0;
  };

  beforeEach(() => {
    local = openTempLocalPorts({ prefix: "kiln-outbound-" });
    ports = local.ports;
    attempts = [];
  });
  afterEach(async () => {
    await dispatcher?.stop();
    dispatcher = undefined;
    await local.close();
  });

  it("acknowledges a delivered message, re-sends a retried one with the handler's next body, drops a given-up one", async () => {
    await ports.queue.send(QUEUE, { id: "a", attempt: 1, answers: ["ok"] });
    await ports.queue.send(QUEUE, { id: "b", attempt: 1, answers: ["retry", "retry", "ok"] });
    await ports.queue.send(QUEUE, { id: "c", attempt: 1, answers: ["retry", "give-up"] });
    start();
    await until(async () => attempts.length === 6 && (await settled()));
    const of = (id: string) => attempts.filter((a) => a.id === id).map((a) => a.attempt);
    assert.deepEqual(of("a"), [1]);
    assert.deepEqual(of("b"), [1, 2, 3]);
    assert.deepEqual(of("c"), [1, 2]);
    assert.equal((await ports.queue.depth(`${QUEUE}-dlq`)).visible, 0, "nothing dead-lettered");
  });

  it("drops an unreadable message without attempting it", async () => {
    await ports.queue.send(QUEUE, { not: "a message" });
    await ports.queue.send(QUEUE, { id: "after", attempt: 1, answers: ["ok"] });
    start();
    await until(async () => attempts.length === 1 && (await settled()));
    assert.deepEqual(attempts, [{ id: "after", attempt: 1 }]);
  });

  it("carries a message whose time has not come in hops of at most 900 s, without attempting it", async () => {
    await local.close();
    let clock = Date.now();
    local = openTempLocalPorts({ prefix: "kiln-outbound-", now: () => clock });
    ports = local.ports;
    const later = { id: "later", attempt: 1, answers: ["ok"], notBefore: clock + 3 * 3_600_000 };
    await ports.queue.send(QUEUE, later);
    start(() => clock);
    await until(async () => (await ports.queue.depth(QUEUE)).delayed === 1);
    await dispatcher!.stop();
    assert.deepEqual(attempts, []);
    clock += (MAX_HOP_SECONDS - 1) * 1000;
    assert.deepEqual(await ports.queue.receive(QUEUE, { visibilitySeconds: 30 }), []);
    clock += 1000;
    const [hop] = await ports.queue.receive(QUEUE, { visibilitySeconds: 30 });
    assert.deepEqual(hop?.body, later, "the same message, re-sent for the next hop");
  });
  it("runs messages with the same order key one after another, and others beside them", async () => {
    interface Keyed {
      id: string;
      group: string;
    }
    const log: string[] = [];
    const gates = new Map<string, () => void>();
    const keyed: DeliveryHandler<Keyed> = {
      queue: QUEUE,
      name: "keyed message",
      parse: (body) => body as Keyed,
      describe: (m) => ({ id: m.id }),
      orderKey: (m) => m.group,
      async attempt(m) {
        log.push(`start ${m.id}`);
        await new Promise<void>((resolve) => gates.set(m.id, resolve));
        log.push(`end ${m.id}`);
        return { kind: "delivered" };
      },
    };
    for (const [id, group] of [
      ["a1", "a"],
      ["a2", "a"],
      ["b1", "b"],
    ])
      await ports.queue.send(QUEUE, { id, group });
    const keyedDispatcher = new OutboundDispatcher(keyed, {
      queue: ports.queue,
      logger,
      attemptTimeoutMs: 30_000,
      pollWaitSeconds: 1,
    });
    keyedDispatcher.start();
    try {
      await until(() => gates.has("a1") && gates.has("b1"));
      assert.ok(!gates.has("a2"), "a2 waits for a1, which has not ended");
      gates.get("b1")!();
      gates.get("a1")!();
      await until(() => gates.has("a2"));
      gates.get("a2")!();
      await until(settled);
      assert.ok(log.indexOf("end a1") < log.indexOf("start a2"));
    } finally {
      for (const release of gates.values()) release();
      await keyedDispatcher.stop();
    }
  });
});
