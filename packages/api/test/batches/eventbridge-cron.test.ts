/**
 * A manifest's croner schedule in EventBridge Scheduler's cron terms: read back with croner, the
 * translation fires at exactly the manifest's times (and the warm-up exactly `warmup_minutes`
 * earlier), in named zones and across DST changes; what EventBridge cannot say is refused.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Cron } from "croner";

import { fromEventBridgeCron, toEventBridgeCron, warmupEventBridgeCron } from "../../src/batches/eventbridge-cron.js";

const fires = (pattern: string, zone: string, from: Date, n: number) =>
  new Cron(pattern, { paused: true, timezone: zone }).nextRuns(n, from).map((d) => d.getTime());

const FROM = new Date("2026-03-20T00:00:00Z"); // the spring DST changes (US 8 Mar, EU 29 Mar) and later
const ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"];

describe("EventBridge cron translation", () => {
  const same = [
    "0 2 * * *",
    "@daily",
    "@weekly",
    "@hourly",
    "30 6 * * 1-5",
    "45 23 * * 5-7",
    "0 9 * * SUN,WED",
    "*/15 8-18 * * *",
    "0 0 1 * *",
    "0 0 */2 * *",
    "0 0 12 * * 5#2",
    "10 4 * 1,6 *",
  ];
  for (const pattern of same) {
    it(`${pattern} fires at the same times`, () => {
      const t = toEventBridgeCron(pattern);
      assert.ok("expression" in t, JSON.stringify(t));
      assert.match(t.expression, /^cron\(\S+ \S+ \S+ \S+ \S+ \S+\)$/);
      for (const zone of ZONES) {
        assert.deepEqual(
          fires(fromEventBridgeCron(t.expression), zone, FROM, 40),
          fires(pattern, zone, FROM, 40),
          zone,
        );
      }
    });
  }

  it("warm-ups fire warmup_minutes before, across midnight and on the right days", () => {
    for (const [pattern, minutes] of [
      ["0 2 * * *", 15],
      ["0 0 * * *", 30],
      ["10 0 * * 1-5", 45],
      ["0 0 5,20 * *", 60],
      ["15 * * * *", 20],
    ] as const) {
      const w = warmupEventBridgeCron(pattern, minutes);
      assert.ok("expression" in w, `${pattern}: ${JSON.stringify(w)}`);
      for (const zone of ["UTC", "Europe/Berlin"]) {
        // Away from a DST change, the warm-up of each fire is exactly `minutes` before it.
        const from = new Date("2026-06-01T00:00:00Z");
        const warm = fires(fromEventBridgeCron(w.expression), zone, from, 30);
        const expected = fires(pattern, zone, new Date(from.getTime() + minutes * 60_000), 30).map(
          (t) => t - minutes * 60_000,
        );
        assert.deepEqual(warm, expected, `${pattern} in ${zone}`);
      }
    }
  });

  it("refuses what EventBridge cannot express, saying why", () => {
    const refused = (t: ReturnType<typeof toEventBridgeCron>) => ("error" in t ? t.error : "");
    assert.match(refused(toEventBridgeCron("0 2 1 * 1")), /day of month OR day of week/);
    assert.match(refused(toEventBridgeCron("30 0 2 * * *")), /whole minutes/);
    assert.match(refused(warmupEventBridgeCron("0 0 1 * *", 10)), /day before a day of month/);
    assert.match(refused(warmupEventBridgeCron("*/5 * * * *", 10)), /one minute/);
    assert.match(refused(warmupEventBridgeCron("0 * * * *", 60)), /under 60 minutes/);
  });
});
