import type { Sample } from "./simulator.js";

/**
 * A self-contained SVG of a simulation: queue depth, instances and p95 time to image over time, three
 * stacked panels sharing the time axis (no chart library: a few polylines).
 */
export function plotSvg(samples: Sample[], title: string): string {
  const width = 900;
  const panel = 160;
  const left = 70;
  const right = 20;
  const top = 40;
  const gap = 30;
  const hours = samples.length ? (samples[samples.length - 1]!.t + 1) / 3600 : 1;
  const series: { key: keyof Sample; label: string; colour: string }[] = [
    { key: "queued", label: "queue depth (max per interval)", colour: "#c0392b" },
    { key: "instances", label: "GPU instances", colour: "#2471a3" },
    { key: "p95", label: "p95 time to image (s)", colour: "#1e8449" },
  ];
  const parts: string[] = [];
  series.forEach((s, i) => {
    const y0 = top + i * (panel + gap);
    const max = Math.max(1, ...samples.map((x) => x[s.key]));
    const points = samples
      .map((x) => {
        const px = left + ((x.t / 3600 / hours) * (width - left - right)).toFixed(1);
        const py = (y0 + panel - (x[s.key] / max) * panel).toFixed(1);
        return `${px},${py}`;
      })
      .join(" ");
    parts.push(
      `<rect x="${left}" y="${y0}" width="${width - left - right}" height="${panel}" fill="none" stroke="#ccc"/>`,
      `<text x="${left}" y="${y0 - 6}" font-size="12" fill="${s.colour}">${s.label}</text>`,
      `<text x="${left - 6}" y="${y0 + 10}" font-size="10" text-anchor="end">${fmt(max)}</text>`,
      `<text x="${left - 6}" y="${y0 + panel}" font-size="10" text-anchor="end">0</text>`,
      `<polyline fill="none" stroke="${s.colour}" stroke-width="1.2" points="${points}"/>`,
    );
  });
  const height = top + series.length * (panel + gap);
  parts.push(
    `<text x="${left}" y="${height - 8}" font-size="10">0 h</text>`,
    `<text x="${width - right}" y="${height - 8}" font-size="10" text-anchor="end">${fmt(hours)} h</text>`,
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">`,
    `<text x="${left}" y="20" font-size="14">${escapeXml(title)}</text>`,
    ...parts,
    "</svg>",
  ].join("\n");
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const escapeXml = (s: string) => s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
