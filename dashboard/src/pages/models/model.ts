// Pure helpers of the Models page: state words, reasons without stack traces, placement, load options.
import type { DownloadState } from "../../api/client";
import { formatBytes, formatPercent, num } from "../overview/format";

const WORDS: Record<string, string> = {
  READY: "Ready",
  LOADING: "Loading…",
  UNLOADING: "Unloading…",
  UNAVAILABLE: "Unavailable",
};

/** Triton's state (or the adapter's LOADING) in words: READY → "Ready". */
export function stateWords(state: string): string {
  if (WORDS[state]) return WORDS[state];
  const lower = state.toLowerCase().replace(/_/g, " ");
  return lower ? lower[0].toUpperCase() + lower.slice(1) : "Unknown";
}

/** The tone of a state for its badge: ok, busy, off (unloaded, normal) or bad (unloaded with a reason). */
export function stateTone(state: string, hasReason = false): "ok" | "busy" | "off" | "bad" {
  if (state === "READY") return "ok";
  if (state === "LOADING" || state === "UNLOADING") return "busy";
  return hasReason ? "bad" : "off";
}

const MAX_REASON = 600;

/** A reason in words: Triton's reasons may carry a Python traceback; keep its meaningful line.
 * - "Traceback (most recent call last): … ValueError: x" → "ValueError: x" (the exception's line);
 * - "load failed …: ModuleNotFoundError: …\n\nAt:\n  /x.py(3): f" → its first line;
 * - anything else: as is (trimmed, and shortened past 600 characters). */
export function reasonText(text: string | null | undefined): string | null {
  if (!text || !text.trim()) return null;
  const lines = text.split(/\r?\n/).map((line) => line.trimEnd()).filter((line) => line.trim());
  const traceback = /Traceback \(most recent call last\)|^\s+File "|^At:$|^\s+\S+\(\d+\): \S+/m.test(text);
  let result = text.trim();
  if (traceback) {
    if (/^Traceback \(most recent call last\)/.test(lines[0].trim())) {
      const exception = [...lines].reverse().find((line) => !/^\s/.test(line) && !/^Traceback /.test(line) && line.trim() !== "At:");
      result = (exception ?? lines[0]).trim();
    } else {
      result = lines[0].trim();
    }
  }
  return result.length > MAX_REASON ? `${result.slice(0, MAX_REASON - 1)}…` : result;
}

/** True when a reason is a problem, not Triton's plain "unloaded" of a model nobody loaded (yet). */
export function isProblem(reason: string | null | undefined): boolean {
  return !!reason && !/^unloaded\.?$/i.test(reason.trim());
}

/** True when the model's artifacts come from a hub repository (not a local path). */
export function hasHubSource(source: string | null | undefined): source is string {
  return !!source && !source.startsWith("/");
}

const KINDS: Record<string, string> = { KIND_CPU: "CPU", KIND_GPU: "GPU", KIND_AUTO: "auto", KIND_MODEL: "model-defined" };

/** Triton's instance groups in words: [{count: 2, kind: "KIND_GPU", gpus: [0, 1]}] → "2 × GPU 0, 1". */
export function placementText(groups: Record<string, unknown>[] | null | undefined): string {
  if (!groups || !groups.length) return "default";
  return groups
    .map((group) => {
      const count = num(group.count) ?? 1;
      const kind = typeof group.kind === "string" ? (KINDS[group.kind] ?? group.kind) : "auto";
      const gpus = Array.isArray(group.gpus) && group.gpus.length ? ` ${group.gpus.join(", ")}` : "";
      return `${count} × ${kind}${gpus}`;
    })
    .join(" + ");
}

/** The "Instances" input: "" → default (undefined); an integer 1–16; anything else → an error in words. */
export function parseInstances(text: string): { value?: number; error?: string } {
  const trimmed = text.trim();
  if (!trimmed) return {};
  const value = Number(trimmed);
  if (!Number.isInteger(value) || value < 1 || value > 16) return { error: "Instances must be a whole number from 1 to 16, or empty for the default." };
  return { value };
}

/** The body of POST /load from the form: {} keeps the repository's placement. */
export function loadBody(gpu: string, instances: number | undefined): { gpus?: number[]; instances?: number } {
  const body: { gpus?: number[]; instances?: number } = {};
  if (gpu !== "") body.gpus = [Number(gpu)];
  if (instances !== undefined) body.instances = instances;
  return body;
}

/** A download's progress in words: "45% · 1.2 GiB of 2.6 GiB · 3 of 10 files". */
export function downloadText(download: Pick<DownloadState, "percent" | "bytes_done" | "bytes_total" | "files_done" | "files_total">): string {
  const parts: string[] = [];
  if (num(download.percent) !== null) parts.push(formatPercent(download.percent));
  parts.push(download.bytes_total ? `${formatBytes(download.bytes_done)} of ${formatBytes(download.bytes_total)}` : formatBytes(download.bytes_done));
  if (download.files_total) parts.push(`${download.files_done} of ${download.files_total} files`);
  return parts.join(" · ");
}

/** A GPU option's text: "GPU 0 · NVIDIA H200 (141 GiB)". */
export function gpuLabel(device: Record<string, unknown>, position: number): { value: string; text: string } {
  const index = num(device.index) ?? position;
  const name = typeof device.name === "string" && device.name ? ` · ${device.name}` : "";
  const memory = num(device.memory_total_bytes);
  return { value: String(index), text: `GPU ${index}${name}${memory ? ` (${formatBytes(memory)})` : ""}` };
}
