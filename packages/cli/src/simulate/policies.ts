/** What a scaling policy sees at each evaluation. */
export interface FleetView {
  now: number;
  /** Renders waiting (both lanes). */
  queued: number;
  /** Renders on a GPU. */
  inService: number;
  /** Instances launched and not yet terminating (booting ones included). */
  instances: number;
  /** Seconds since the fleet last had any work (queued or in service); 0 while it has. */
  idleFor: number;
}

export interface ScalingPolicy {
  name: string;
  /** How often the policy is evaluated (seconds), as CloudWatch alarms and target tracking do. */
  evalSeconds: number;
  desired(view: FleetView): number;
}

export interface PolicyOptions {
  /** Target backlog (queued + in service) per instance. */
  targetBacklog: number;
  maxInstances: number;
  /** Idle time before scaling to zero (seconds). */
  idleSeconds: number;
  /** Scheduled batch times (seconds from start) and how long before them to warm up. */
  warmups?: { at: number[]; leadSeconds: number; instances: number };
}

export const POLICY_NAMES = ["target-backlog", "step", "warm-pool", "fixed", "scheduled-warmup"] as const;

/** Backlog-per-task target tracking, with scale to zero once idle — Kiln's recommended default. */
function targetBacklog(o: PolicyOptions, min = 0): ScalingPolicy {
  return {
    name: min > 0 ? "warm-pool" : "target-backlog",
    evalSeconds: 60,
    desired(v) {
      const work = v.queued + v.inService;
      if (work === 0) return v.idleFor >= o.idleSeconds ? min : Math.max(min, v.instances);
      return Math.min(o.maxInstances, Math.max(min, Math.ceil(work / o.targetBacklog)));
    },
  };
}

/** Step scaling: +1 above the target, +2 above twice it; −1 when nearly idle; 0 after the idle time. */
function step(o: PolicyOptions): ScalingPolicy {
  return {
    name: "step",
    evalSeconds: 60,
    desired(v) {
      const work = v.queued + v.inService;
      if (work === 0) return v.idleFor >= o.idleSeconds ? 0 : v.instances;
      if (v.instances === 0) return 1;
      const perTask = work / v.instances;
      if (perTask > 2 * o.targetBacklog) return Math.min(o.maxInstances, v.instances + 2);
      if (perTask > o.targetBacklog) return Math.min(o.maxInstances, v.instances + 1);
      if (perTask < o.targetBacklog / 4 && v.instances > 1) return v.instances - 1;
      return v.instances;
    },
  };
}

export function makePolicy(name: string, o: PolicyOptions): ScalingPolicy {
  if (name === "target-backlog") return targetBacklog(o);
  if (name === "warm-pool") return targetBacklog(o, 1);
  if (name === "step") return step(o);
  if (name === "fixed") return { name, evalSeconds: 60, desired: () => o.maxInstances };
  if (name === "scheduled-warmup") {
    const base = targetBacklog(o);
    const w = o.warmups ?? { at: [], leadSeconds: 0, instances: 0 };
    return {
      name,
      evalSeconds: 60,
      desired(v) {
        const warming = w.at.some((at) => v.now >= at - w.leadSeconds && v.now < at);
        return Math.max(base.desired(v), warming ? Math.min(o.maxInstances, w.instances) : 0);
      },
    };
  }
  throw new Error(`--policy must be one of ${POLICY_NAMES.join(", ")}, got "${name}"`);
}
