import type { JobRecord } from "@kiln/shared";

/** One output image, ready for a platform: its bytes for upload and a signed URL for linking. */
export interface ChatImage {
  index: number;
  filename: string;
  contentType: string;
  width: number;
  height: number;
  bytes: Uint8Array;
  /** Signed download URL, valid for KILN_DOWNLOAD_URL_SECONDS. */
  url: string;
}

/**
 * How one platform shows a job's life. Each method re-presents the job as it is now (the
 * dispatcher re-reads it), may be called more than once for the same state (at-least-once
 * queues), and throws RetryLater to be called again later.
 */
export interface ChatPresenter {
  queued(job: JobRecord, position: number): Promise<void>;
  progress(job: JobRecord): Promise<void>;
  /** A job that ended: images (succeeded) or the reason (failed, canceled, expired). */
  ended(job: JobRecord, images: ChatImage[]): Promise<void>;
  /** The Discord interaction token is about to lapse while the job runs. */
  expiring(job: JobRecord): Promise<void>;
}

/** The public page a chat message can link to when it cannot carry the images itself. */
export function resultLink(publicUrl: string, jobId: string): string {
  return `${publicUrl.replace(/\/+$/, "")}/integrations/results/${jobId}`;
}
