import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { renderRequestSchema, SCHEDULER_NAMES } from "@kiln/shared";

/** Issue 3's API surface for schedulers: `scheduler` ∈ euler | euler_a | dpmpp_2m | ddim, `karras` where supported. */
const check = (extra: Record<string, unknown>) => renderRequestSchema().safeParse({ prompt: "a cat", ...extra });

const fieldsOf = (result: ReturnType<typeof check>) =>
  result.success ? [] : result.error.issues.map((i) => i.path.join("."));

describe("render request: scheduler and karras", () => {
  it("accepts the four schedulers, with and without karras where supported, and no scheduler (the model's own)", () => {
    assert.deepEqual([...SCHEDULER_NAMES], ["euler", "euler_a", "dpmpp_2m", "ddim"]);
    for (const scheduler of ["euler", "euler_a", "dpmpp_2m"]) {
      for (const karras of [true, false, undefined])
        assert.ok(check({ scheduler, karras }).success, `${scheduler} karras=${karras}`);
    }
    assert.ok(check({ scheduler: "ddim" }).success);
    assert.ok(check({ scheduler: "ddim", karras: false }).success);
    const parsed = check({});
    assert.ok(parsed.success);
    assert.equal(parsed.data.scheduler, undefined);
  });

  it("karras with ddim is a 400 naming karras", () => {
    const result = check({ scheduler: "ddim", karras: true });
    assert.equal(result.success, false);
    assert.deepEqual(fieldsOf(result), ["karras"]);
    assert.match(result.error!.issues[0]!.message, /ddim/);
  });

  it("unknown scheduler names and non-boolean karras name their field", () => {
    for (const scheduler of ["dpmpp_2m_karras", "heun", "Euler", ""])
      assert.deepEqual(fieldsOf(check({ scheduler })), ["scheduler"], scheduler);
    assert.deepEqual(fieldsOf(check({ scheduler: "euler", karras: "yes" })), ["karras"]);
  });
});
