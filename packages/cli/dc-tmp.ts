import { run } from "./src/bench/duty-cycle-bench.js";
const cases = [
  { mode: "ensemble" as const, n: 1, renders: 10, pipelined: true },
];
console.log(await run(cases));
