/** The playground's client of Kiln's public API: the same routes and problem documents any client sees. */

export interface Problem {
  status: number;
  title?: string;
  detail?: string;
  code?: string;
  errors?: { field: string; message: string }[];
}

export interface RenderView {
  id: string;
  status: string;
  mode: string;
  created_at: string;
  seed: number;
  width: number;
  height: number;
  n: number;
  progress: { stage: number; stage_kind: string; step: number; steps: number; stages: number };
  queue_position?: number;
  waiting_reason?: { code: string; message: string };
  images: { url: string; width: number; height: number; seed: number; format: string }[];
  error?: { code: string; message: string };
}

/** An API answer that was not 2xx, carrying the problem document as Kiln worded it. */
export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.title ?? `HTTP ${problem.status}`);
  }
}

/** Where the API lives: the folder the page was served from, so a stage prefix (/prod/) keeps working. */
export const apiBase = (): string => new URL(".", location.href).href;

export const url = (path: string): string => new URL(path, apiBase()).href;

export function headers(key: string, json = false): Record<string, string> {
  return {
    ...(key ? { authorization: `Bearer ${key}` } : {}),
    ...(json ? { "content-type": "application/json" } : {}),
  };
}

async function problemOf(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as Problem;
    return new ApiError({ ...body, status: res.status });
  } catch {
    return new ApiError({ status: res.status, title: res.statusText, detail: text.slice(0, 300) || res.statusText });
  }
}

export async function call<T>(key: string, path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(url(path), { ...init, headers: { ...headers(key, !!init.body), ...(init.headers ?? {}) } });
  if (!res.ok) throw await problemOf(res);
  return (await res.json()) as T;
}

export interface StreamEvent {
  event: string;
  id?: string;
  data: unknown;
}

/**
 * `GET /v1/renders/{id}/events` read with fetch (EventSource cannot send an Authorization header),
 * resumed with Last-Event-ID when the server ends a stream early, until the render's terminal event.
 */
export async function streamEvents(
  key: string,
  id: string,
  onEvent: (e: StreamEvent) => void,
  signal?: AbortSignal,
): Promise<void> {
  let lastId: string | undefined;
  for (let attempt = 0; attempt < 50 && !signal?.aborted; attempt++) {
    const res = await fetch(url(`v1/renders/${encodeURIComponent(id)}/events?previews=true`), {
      headers: { ...headers(key), ...(lastId ? { "last-event-id": lastId } : {}) },
      signal,
    });
    if (res.status === 204) return;
    if (!res.ok || !res.body) throw await problemOf(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += value;
      let cut: number;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const e: StreamEvent = { event: "message", data: undefined };
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") e.event = value;
          else if (field === "id") e.id = value;
          else if (field === "data") data.push(value);
        }
        if (data.length === 0) continue;
        e.data = JSON.parse(data.join("\n"));
        if (e.id) lastId = e.id;
        onEvent(e);
        if (["succeeded", "failed", "canceled", "expired"].includes(e.event)) return;
      }
    }
  }
}

/** Reads an image URL into a data URL, to send a result back as an image input. */
export async function dataUrlOf(href: string): Promise<string> {
  const blob = await (await fetch(href)).blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
