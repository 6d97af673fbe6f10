// SRT and WebVTT files, built in the browser from a result's segments (pure functions, tested).
import type { SeedDiarization, SeedTranscription } from "../../api/client";

export interface Cue {
  start: number;
  end: number;
  text: string;
  speaker?: string | null;
}

/** Seconds → `HH:MM:SS,mmm` (SRT, separator ",") or `HH:MM:SS.mmm` (WebVTT, "."), rounded to the millisecond. */
export function formatTimestamp(seconds: number, separator: "," | "."): string {
  const total = Math.max(0, Math.round((Number.isFinite(seconds) ? seconds : 0) * 1000));
  const ms = total % 1000;
  const s = Math.floor(total / 1000) % 60;
  const m = Math.floor(total / 60000) % 60;
  const h = Math.floor(total / 3600000);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(h)}:${two(m)}:${two(s)}${separator}${String(ms).padStart(3, "0")}`;
}

/** A cue's text: speaker prefix when known, no blank lines (they would end the cue). */
function cueText(cue: Cue): string {
  const text = cue.text
    .split(/\r\n|\r|\n/)
    .map((line) => line.trim())
    .filter(Boolean)
    .join("\n");
  if (!cue.speaker) return text;
  return text ? `[${cue.speaker}] ${text}` : cue.speaker;
}

/** Cues worth writing: with text, in time order, end never before start. */
function usable(cues: readonly Cue[]): Cue[] {
  return cues
    .filter((cue) => cueText(cue) !== "")
    .map((cue) => ({ ...cue, start: Math.max(0, cue.start), end: Math.max(cue.start, cue.end) }))
    .sort((a, b) => a.start - b.start || a.end - b.end);
}

export function toSrt(cues: readonly Cue[]): string {
  return usable(cues)
    .map((cue, index) => `${index + 1}\n${formatTimestamp(cue.start, ",")} --> ${formatTimestamp(cue.end, ",")}\n${cueText(cue)}\n`)
    .join("\n");
}

function escapeVtt(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function toVtt(cues: readonly Cue[]): string {
  const body = usable(cues).map(
    (cue) => `${formatTimestamp(cue.start, ".")} --> ${formatTimestamp(cue.end, ".")}\n${escapeVtt(cueText(cue))}\n`,
  );
  return ["WEBVTT\n", ...body].join("\n");
}

/** A transcription's cues: its segments (with their speakers), or one cue of its whole text. */
export function transcriptionCues(result: Pick<SeedTranscription, "text" | "duration" | "segments">): Cue[] {
  const segments = result.segments ?? [];
  if (segments.length) return segments.map(({ start, end, text, speaker }) => ({ start, end, text, speaker: speaker ?? null }));
  return result.text.trim() ? [{ start: 0, end: result.duration, text: result.text }] : [];
}

/** A diarization's cues: each turn, its speaker's name as the text. */
export function diarizationCues(result: Pick<SeedDiarization, "segments">): Cue[] {
  return result.segments.map(({ start, end, speaker }) => ({ start, end, text: speaker }));
}
