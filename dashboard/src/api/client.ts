// Typed clients of the adapter, from its OpenAPI (src/api/schema.d.ts, written by
// `python -m passerelle_stack dashboard-types`; a test fails when it is stale).
import createClient, { type Middleware } from "openapi-fetch";
import { keys } from "../lib/session";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Status = Schemas["Status"];
export type ModelState = Schemas["ModelState"];
export type MetricsHistory = Schemas["MetricsHistory"];
export type MetricsPoint = Schemas["MetricsPoint"];
export type TokenState = Schemas["TokenState"];
export type DownloadState = Schemas["DownloadState"];
export type SeedTranscription = Schemas["SeedTranscription"];
export type SeedDiarization = Schemas["SeedDiarization"];

/** An error from the API, in words: the message of its error body, never a stack trace. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export function errorMessage(status: number, body: unknown): ApiError {
  const error = (body as { error?: { message?: string; code?: string } } | undefined)?.error;
  if (error?.message) return new ApiError(status, error.message, error.code);
  if (status === 401) return new ApiError(status, "The admin key is missing or wrong: enter it in Settings.", "invalid_admin_key");
  return new ApiError(status, `The server answered ${status}.`);
}

const adminAuth: Middleware = {
  onRequest({ request }) {
    const key = keys.admin();
    if (key) request.headers.set("Authorization", `Bearer ${key}`);
    // Admin writes carry JSON (or a custom header): the adapter refuses cross-site simple requests.
    if (request.method !== "GET" && !request.headers.has("Content-Type")) request.headers.set("Content-Type", "application/json");
    return request;
  },
};

const apiAuth: Middleware = {
  onRequest({ request }) {
    const key = keys.api();
    if (key) request.headers.set("Authorization", `Bearer ${key}`);
    return request;
  },
};

// The API lives at the adapter's root, whatever sub-path (DASHBOARD_PATH) serves the app.
export const rootUrl = (): string => window.location.origin;

export const admin = createClient<paths>({ baseUrl: rootUrl() });
admin.use(adminAuth);

export const api = createClient<paths>({ baseUrl: rootUrl() });
api.use(apiAuth);

/** Unwraps an openapi-fetch answer: its data, or an ApiError in words. */
export async function must<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let answer: { data?: T; error?: unknown; response: Response };
  try {
    answer = await call;
  } catch (cause) {
    if (cause instanceof DOMException && cause.name === "AbortError") throw cause;
    throw new ApiError(0, "The adapter did not answer: is it running?");
  }
  if (answer.error !== undefined || !answer.response.ok) throw errorMessage(answer.response.status, answer.error);
  return answer.data as T;
}

/** Headers for calls made with fetch directly (streams, multipart forms): the OpenAI API key. */
export function apiHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const key = keys.api();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}
