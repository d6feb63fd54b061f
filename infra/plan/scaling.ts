/**
 * The GPU fleet's sizing and scaling, derived from a few operator settings. Pure: infra/fleet and
 * the tests read the same answers.
 */
export interface FleetSettings {
  /** Instance types in order of preference, all with one NVIDIA GPU and ≥ 24 GB VRAM for SDXL. */
  instanceTypes: string[];
  maxWorkers: number;
  /** Workers kept running when idle: 0 = scale to zero (pay nothing for GPUs at rest). */
  minWorkers: number;
  /** On-demand instances always kept in the mix before spot is used (0: spot first). */
  onDemandBase: number;
  /** Share of on-demand above the base, percent; the rest is spot. */
  onDemandPercentAboveBase: number;
  /** Stages waiting per running worker the scaler aims at. */
  backlogPerWorker: number;
  /** Seconds a worker may spend finishing its stage after SIGTERM (KILN_DRAIN_SECONDS). */
  drainSeconds: number;
}

export const DEFAULT_FLEET: FleetSettings = {
  instanceTypes: ["g5.xlarge", "g6.xlarge", "g5.2xlarge"],
  maxWorkers: 4,
  minWorkers: 0,
  onDemandBase: 0,
  onDemandPercentAboveBase: 0,
  // One waiting render per worker: `kiln simulate` (docs/scaling.md) puts an A10 render at ~8 s, so
  // 4 waiting stages meant a p50 of ~22 s at 10 renders/min; 1 gives ~9 s for ~14 % more GPU cost.
  backlogPerWorker: 1,
  drainSeconds: 90,
};

/** EC2 gives a spot instance two minutes between the interruption notice and its end. */
export const SPOT_NOTICE_SECONDS = 120;

export interface FleetPlan {
  asg: {
    minSize: number;
    maxSize: number;
    onDemandBaseCapacity: number;
    onDemandPercentageAboveBaseCapacity: number;
    spotAllocationStrategy: "price-capacity-optimized";
    instanceTypes: string[];
    capacityRebalance: boolean;
  };
  service: { minCapacity: number; maxCapacity: number; desiredCount: number };
  task: { gpus: 1; stopTimeoutSeconds: number; drainSeconds: number };
  scaling: {
    targetBacklogPerWorker: number;
    scaleOutCooldown: number;
    scaleInCooldown: number;
    /** Step policy out of zero: the number of workers started when stages wait and none runs. */
    wakeFromZeroWorkers: number;
  };
}

export function planFleet(s: FleetSettings = DEFAULT_FLEET): FleetPlan {
  if (s.instanceTypes.length === 0) throw new Error("the GPU fleet needs at least one instance type");
  if (s.maxWorkers < Math.max(1, s.minWorkers)) throw new Error("maxWorkers must be at least max(1, minWorkers)");
  // SIGTERM → drain → SIGKILL must fit in the spot notice, with time for the message release
  // and the agent's own stop: ECS on EC2 allows stopTimeout up to 120 s.
  const stopTimeoutSeconds = Math.min(SPOT_NOTICE_SECONDS, s.drainSeconds + 15);
  if (s.drainSeconds + 15 > SPOT_NOTICE_SECONDS) {
    throw new Error(
      `drainSeconds ${s.drainSeconds} + 15 s to release messages exceeds the ${SPOT_NOTICE_SECONDS} s spot notice`,
    );
  }
  return {
    asg: {
      // The capacity provider's managed scaling moves the ASG; 0 lets it end every instance when idle.
      minSize: 0,
      maxSize: s.maxWorkers,
      onDemandBaseCapacity: s.onDemandBase,
      onDemandPercentageAboveBaseCapacity: s.onDemandPercentAboveBase,
      spotAllocationStrategy: "price-capacity-optimized",
      instanceTypes: s.instanceTypes,
      capacityRebalance: true,
    },
    service: { minCapacity: s.minWorkers, maxCapacity: s.maxWorkers, desiredCount: s.minWorkers },
    task: { gpus: 1, stopTimeoutSeconds, drainSeconds: s.drainSeconds },
    scaling: {
      targetBacklogPerWorker: s.backlogPerWorker,
      scaleOutCooldown: 60,
      scaleInCooldown: 300,
      wakeFromZeroWorkers: Math.max(1, s.minWorkers),
    },
  };
}

/**
 * Metric math for "stages waiting per running worker": the visible messages of every stage queue
 * (ids `q0`, `q1`, …) over the running task count (id `workers`), never dividing by zero. Target
 * tracking on this keeps backlog per worker near the target.
 */
export function backlogPerWorkerExpression(queueCount: number): string {
  if (queueCount < 1) throw new Error("at least one stage queue");
  const sum = Array.from({ length: queueCount }, (_, i) => `q${i}`).join(" + ");
  return `(${sum}) / MAX([workers, 1])`;
}

/** Stages waiting while no worker runs: the alarm that wakes the fleet from zero. */
export function waitingWithoutWorkerExpression(queueCount: number): string {
  const sum = Array.from({ length: queueCount }, (_, i) => `q${i}`).join(" + ");
  return `IF(workers < 1, ${sum}, 0)`;
}

/** Fleet settings from the deploying shell's environment (KILN_GPU_*), validated. */
export function fleetSettingsFromEnv(env: Record<string, string | undefined>): FleetSettings {
  const num = (name: string, fallback: number) => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${raw}: use a whole number ≥ 0`);
    return n;
  };
  return {
    instanceTypes: env.KILN_GPU_INSTANCE_TYPES
      ? env.KILN_GPU_INSTANCE_TYPES.split(",")
          .map((x) => x.trim())
          .filter(Boolean)
      : DEFAULT_FLEET.instanceTypes,
    maxWorkers: num("KILN_GPU_MAX_WORKERS", DEFAULT_FLEET.maxWorkers),
    minWorkers: num("KILN_GPU_MIN_WORKERS", DEFAULT_FLEET.minWorkers),
    onDemandBase: num("KILN_GPU_ON_DEMAND_BASE", DEFAULT_FLEET.onDemandBase),
    onDemandPercentAboveBase: num("KILN_GPU_ON_DEMAND_PERCENT", DEFAULT_FLEET.onDemandPercentAboveBase),
    backlogPerWorker: num("KILN_BACKLOG_PER_WORKER", DEFAULT_FLEET.backlogPerWorker),
    drainSeconds: num("KILN_GPU_DRAIN_SECONDS", DEFAULT_FLEET.drainSeconds),
  };
}
