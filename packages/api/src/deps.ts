import type { KeyRecord, Ports, RenderLimits } from "@kiln/shared";

/** What the API needs from its host: the ports of one family and a few settings. Web-standard only. */
export interface ApiDeps {
  ports: Ports;
  publicUrl: string;
  limits: RenderLimits;
  maxBodyBytes: number;
  downloadUrlSeconds: number;
  retentionHours: number;
  /** Serves `/v1/files/*` from the BlobStore with signed URLs (local family). */
  serveFiles?: { verify(key: string, expires: string, sig: string): Promise<boolean> };
  /** Reports whether the API can accept renders (ports reachable, config loaded). */
  ready?: () => Promise<boolean>;
  now?: () => Date;
  log?: (level: "info" | "warn" | "error", obj: Record<string, unknown>, msg: string) => void;
}

export type ApiEnv = { Variables: { key: KeyRecord; requestId: string } };
