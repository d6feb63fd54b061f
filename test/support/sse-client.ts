/** A Server-Sent Events reader over fetch (undici: a real HTTP client), for tests. */
export interface SseEvent {
  event: string;
  id?: string;
  data: string;
}

export interface SseStream {
  status: number;
  headers: Headers;
  /** Comment lines seen so far (`: …`). */
  comments: string[];
  /** Resolves with the next event, or undefined once the stream has ended. */
  next(timeoutMs?: number): Promise<SseEvent | undefined>;
  /** Every remaining event until the server closes the stream. */
  rest(timeoutMs?: number): Promise<SseEvent[]>;
  close(): void;
}

export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const abort = new AbortController();
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: abort.signal });
  const comments: string[] = [];
  const queue: SseEvent[] = [];
  let buffer = "";
  let done = !res.body;
  const reader = res.body?.getReader();
  const decoder = new TextDecoder();
  // One read in flight at a time, kept across timeouts so no chunk is lost.
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;

  async function fill(deadline: number): Promise<void> {
    while (queue.length === 0 && !done) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no SSE event within the timeout from ${url}`);
      let timer: NodeJS.Timeout | undefined;
      pending ??= reader!.read();
      const chunk = await Promise.race([
        pending,
        new Promise<"timeout">((r) => {
          timer = setTimeout(() => r("timeout"), left);
        }),
      ]).finally(() => clearTimeout(timer));
      if (chunk === "timeout") continue;
      pending = undefined;
      if (chunk.done) {
        done = true;
        break;
      }
      buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event: SseEvent = { event: "message", data: "" };
        const data: string[] = [];
        let hasData = false;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) comments.push(line.slice(1).trim());
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event.event = value;
          else if (field === "id") event.id = value;
          else if (field === "data") {
            data.push(value);
            hasData = true;
          }
        }
        event.data = data.join("\n");
        if (hasData) queue.push(event);
      }
    }
  }

  return {
    status: res.status,
    headers: res.headers,
    comments,
    async next(timeoutMs = 10_000) {
      await fill(Date.now() + timeoutMs);
      return queue.shift();
    },
    async rest(timeoutMs = 30_000) {
      const out: SseEvent[] = [];
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await fill(deadline);
        const e = queue.shift();
        if (!e) return out;
        out.push(e);
      }
    },
    close() {
      done = true;
      abort.abort();
    },
  };
}
