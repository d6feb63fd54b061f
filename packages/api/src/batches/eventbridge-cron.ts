/**
 * A manifest's croner schedule as EventBridge Scheduler's `cron(minutes hours day-of-month month
 * day-of-week year)`, and the same for its warm-up (the schedule moved earlier by
 * `warmup_minutes`). EventBridge differs from croner in three ways that matter: days of the week
 * are 1–7 from Sunday (croner: 0–7 from Sunday), one of day-of-month and day-of-week must be `?`
 * (croner ORs them when both are given), and nothing finer than a minute. What cannot be said in
 * EventBridge's terms is refused with a reason, which the API reports at `PUT /v1/manifests`.
 */
export type Translation = { expression: string } | { error: string };

const NICKNAMES: Record<string, string> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};
const DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

interface Fields {
  minute: string;
  hour: string;
  dom: string;
  month: string;
  dow: string;
  year: string;
}

const any = (f: string) => f === "*" || f === "?";

/** Splits a croner pattern into fields; seconds must be 0. */
export function cronFields(pattern: string): Fields | { error: string } {
  const text = NICKNAMES[pattern.trim().toLowerCase()] ?? pattern.trim();
  const parts = text.split(/\s+/);
  if (parts.length < 5 || parts.length > 7) return { error: `expected 5, 6 or 7 fields, got ${parts.length}` };
  if (parts.length >= 6) {
    const seconds = parts.shift()!;
    if (seconds !== "0" && seconds !== "00")
      return { error: `EventBridge Scheduler fires on whole minutes: the seconds field must be 0 (got ${seconds})` };
  }
  const [minute, hour, dom, month, dow, year = "*"] = parts as [string, string, string, string, string, string?];
  // EventBridge writes increments from a start value (`0/15`), not from `*`.
  const from = (field: string, first: number) => field.replace(/^\*\//, `${first}/`);
  return { minute: from(minute, 0), hour: from(hour, 0), dom: from(dom, 1), month: from(month, 1), dow, year };
}

function dayNumber(token: string): number | undefined {
  const name = DAY_NAMES.indexOf(token.toUpperCase().slice(0, 3));
  if (name >= 0 && /^[a-z]+$/i.test(token)) return name;
  if (/^[0-7]$/.test(token)) return Number(token) % 7;
  return undefined;
}

/** croner's day-of-week field as a set of days 0–6, or undefined when it uses `#`/`L` (kept as is). */
function daySet(field: string): Set<number> | { error: string } {
  const days = new Set<number>();
  for (const token of field.split(",")) {
    const m = /^(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:\/(\d+))?$/i.exec(token);
    if (!m) return { error: `day of week ${JSON.stringify(token)} cannot be translated` };
    const step = m[3] ? Number(m[3]) : 1;
    let from: number | undefined;
    let to: number | undefined;
    if (m[1] === "*") [from, to] = [0, 6];
    else {
      from = dayNumber(m[1]!);
      to = m[2] ? dayNumber(m[2]) : m[3] ? 6 : from;
      // croner counts 7 as Sunday at the end of a range (5-7 = Fri, Sat, Sun).
      if (m[2] === "7") to = 7;
    }
    if (from === undefined || to === undefined || step < 1)
      return { error: `day of week ${JSON.stringify(token)} cannot be translated` };
    for (let d = from; d <= to; d += step) days.add(d % 7);
  }
  return days;
}

const dayList = (days: Set<number>) =>
  [...days]
    .sort((a, b) => a - b)
    .map((d) => DAY_NAMES[d])
    .join(",");

/** `5#2` (second Friday) and `5L` (last Friday) in EventBridge's 1–7 numbering. */
function nthDay(field: string): string | undefined {
  const m = /^([a-z]+|[0-7])(#[1-5]|L)$/i.exec(field);
  if (!m) return undefined;
  const day = dayNumber(m[1]!);
  return day === undefined ? undefined : `${day + 1}${m[2]!.toUpperCase()}`;
}

function render(f: Fields, dow: Set<number> | string | undefined): Translation {
  const domAny = any(f.dom);
  const dowAny = dow === undefined;
  if (!domAny && !dowAny) {
    return {
      error:
        "EventBridge Scheduler cannot fire on 'day of month OR day of week' (croner's reading when both are given): set one of them to *",
    };
  }
  const dowText = dowAny ? "?" : typeof dow === "string" ? dow : dayList(dow);
  return {
    expression: `cron(${f.minute} ${f.hour} ${domAny ? (dowAny ? "*" : "?") : f.dom} ${f.month} ${dowText} ${f.year})`,
  };
}

function dowOf(f: Fields): Set<number> | string | undefined | { error: string } {
  if (any(f.dow)) return undefined;
  const nth = nthDay(f.dow);
  if (nth) return nth;
  const set = daySet(f.dow);
  if (!(set instanceof Set)) return set;
  return set.size === 7 ? undefined : set;
}

/** The manifest's schedule as an EventBridge Scheduler cron expression. */
export function toEventBridgeCron(pattern: string): Translation {
  const f = cronFields(pattern);
  if ("error" in f) return f;
  const dow = dowOf(f);
  if (dow && typeof dow === "object" && "error" in dow) return dow;
  return render(f, dow as Set<number> | string | undefined);
}

/**
 * The schedule moved `minutes` earlier, for the warm-up. Expressible when the schedule fires at
 * one minute of one hour (`30 2 * * *`) or at one minute of every hour (`15 * * * *`); crossing
 * midnight moves the days back by one, which needs every day of month to be 2 or more.
 */
export function warmupEventBridgeCron(pattern: string, minutes: number): Translation {
  const f = cronFields(pattern);
  if ("error" in f) return f;
  const dow = dowOf(f);
  if (dow && typeof dow === "object" && "error" in dow) return dow;
  const refuse = (why: string): Translation => ({
    error: `schedule.warmup_minutes cannot move this schedule earlier in EventBridge's terms: ${why}`,
  });
  if (!/^\d+$/.test(f.minute)) return refuse("the schedule must fire at one minute (e.g. 0 2 * * *)");
  const minute = Number(f.minute);
  if (f.hour === "*") {
    if (minutes >= 60) return refuse("an hourly schedule's warm-up must be under 60 minutes");
    const earlier = minute - minutes;
    if (earlier < 0 && (!any(f.dom) || dow !== undefined))
      return refuse("an hourly schedule on some days only cannot start its warm-up in the hour before");
    return render({ ...f, minute: String((earlier + 60) % 60) }, dow as Set<number> | string | undefined);
  }
  if (!/^\d+$/.test(f.hour)) return refuse("the schedule must fire at one hour, or every hour");
  let total = Number(f.hour) * 60 + minute - minutes;
  let days = dow as Set<number> | string | undefined;
  let dom = f.dom;
  if (total < 0) {
    total += 1440;
    if (typeof days === "string") return refuse("a '#' or 'L' day of week cannot move to the day before");
    if (days) days = new Set([...days].map((d) => (d + 6) % 7));
    if (!any(dom)) {
      const values = dom.split(",");
      if (!values.every((v) => /^\d+$/.test(v) && Number(v) >= 2))
        return refuse("the warm-up would fall on the day before a day of month that is 1 or not a plain number");
      dom = values.map((v) => String(Number(v) - 1)).join(",");
    }
  }
  return render({ ...f, minute: String(total % 60), hour: String(Math.floor(total / 60)), dom }, days);
}

/**
 * An EventBridge cron expression read back into croner's terms (tests and the loopback stand-in
 * compute fire times with croner from what Kiln sent EventBridge).
 */
export function fromEventBridgeCron(expression: string): string {
  const m = /^cron\((.+)\)$/.exec(expression.trim());
  if (!m) throw new Error(`not a cron() expression: ${expression}`);
  const [minute, hour, dom, month, dow, year] = m[1]!.split(/\s+/);
  if (year === undefined) throw new Error(`EventBridge cron has six fields: ${expression}`);
  const day = (t: string) => t.replace(/^([1-7])(#\d|L)?$/, (_, d: string, rest = "") => `${Number(d) - 1}${rest}`);
  const dowCron = dow === "?" ? "*" : dow!.split(",").map(day).join(",");
  // croner steps from a range, not from a start value: `0/15` is `0-59/15`.
  const steps = (field: string, max: number) => field.replace(/^(\d+)\/(\d+)$/, `$1-${max}/$2`);
  const domCron = dom === "?" ? "*" : steps(dom!, 31);
  return `0 ${steps(minute!, 59)} ${steps(hour!, 23)} ${domCron} ${steps(month!, 12)} ${dowCron}${year === "*" ? "" : ` ${year}`}`;
}
