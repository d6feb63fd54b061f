/** A small seeded generator (mulberry32), so a simulation with the same seed is the same simulation. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An exponential variate with the given rate (events per unit time). */
export function exponential(random: () => number, rate: number): number {
  return -Math.log(1 - random()) / rate;
}
