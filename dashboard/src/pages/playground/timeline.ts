// The speaker timeline's layout: rows, merged turns, percentages, colours and axis ticks (pure, tested).

export interface Turn {
  speaker: string;
  start: number;
  end: number;
}

export interface Bar {
  /** Stable key: speaker and index within the row. */
  id: string;
  speaker: string;
  start: number;
  end: number;
  /** Left edge and width, in percent of the timeline's duration. */
  left: number;
  width: number;
}

export interface Row {
  speaker: string;
  color: string;
  /** Seconds this speaker talks (after merging overlaps). */
  total: number;
  bars: Bar[];
}

export interface Layout {
  duration: number;
  rows: Row[];
}

/** Colours: the theme's four chart colours, then four of this page's, then hues spread by the golden angle. */
export function speakerColor(index: number): string {
  if (index < 4) return `var(--chart-${index + 1})`;
  if (index < 8) return `var(--pg-chart-${index + 1})`;
  return `hsl(${Math.round((index * 137.508) % 360)} 55% 45%)`;
}

/** Sorted turns of one speaker, overlapping (or closer than `gap` seconds) turns joined into one. */
export function mergeTurns<T extends { start: number; end: number }>(turns: readonly T[], gap = 0): { start: number; end: number }[] {
  const sorted = turns
    .filter((turn) => Number.isFinite(turn.start) && Number.isFinite(turn.end) && turn.end > turn.start)
    .map(({ start, end }) => ({ start, end }))
    .sort((a, b) => a.start - b.start || a.end - b.end);
  const merged: { start: number; end: number }[] = [];
  for (const turn of sorted) {
    const last = merged[merged.length - 1];
    if (last && turn.start <= last.end + gap) last.end = Math.max(last.end, turn.end);
    else merged.push({ ...turn });
  }
  return merged;
}

const round = (value: number, digits = 4) => Math.round(value * 10 ** digits) / 10 ** digits;

/** Speakers in natural order (SPEAKER_2 before SPEAKER_10). */
export function speakerOrder(turns: readonly Turn[]): string[] {
  return [...new Set(turns.map((turn) => turn.speaker))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
}

/**
 * One row per speaker, each turn a bar placed by start and length as percentages of the duration
 * (the audio's, or the last turn's end when that is later). Bars are at least `minWidth` percent wide,
 * so that a short turn stays visible and clickable, and never pass the right edge.
 */
export function layoutTimeline(turns: readonly Turn[], duration: number, options: { gap?: number; minWidth?: number } = {}): Layout {
  const { gap = 0, minWidth = 0.4 } = options;
  const end = Math.max(Number.isFinite(duration) ? duration : 0, ...turns.map((turn) => (Number.isFinite(turn.end) ? turn.end : 0)));
  const total = end > 0 ? end : 1;
  const rows = speakerOrder(turns).map((speaker, index) => {
    const merged = mergeTurns(
      turns.filter((turn) => turn.speaker === speaker),
      gap,
    );
    const bars = merged.map((turn, n) => {
      const width = Math.min(100, Math.max(minWidth, ((turn.end - turn.start) / total) * 100));
      const left = Math.min((turn.start / total) * 100, 100 - width);
      return { id: `${speaker}#${n}`, speaker, start: turn.start, end: turn.end, left: round(Math.max(0, left)), width: round(width) };
    });
    return { speaker, color: speakerColor(index), total: round(merged.reduce((sum, turn) => sum + turn.end - turn.start, 0), 3), bars };
  });
  return { duration: end, rows };
}

/** A few round tick times from 0 to the duration (at most `max` + 1 of them). */
export function axisTicks(duration: number, max = 6): number[] {
  if (!(duration > 0)) return [0];
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
  const step = steps.find((candidate) => duration / candidate <= max) ?? Math.ceil(duration / max / 3600) * 3600;
  const ticks: number[] = [];
  for (let n = 0; n * step <= duration + 1e-9; n++) ticks.push(round(n * step, 3));
  return ticks;
}

/** A clock time for people: `0:05`, `1:02:03`, with tenths under a minute when asked. */
export function formatClock(seconds: number, decimals = 0): string {
  const safe = Math.max(0, Number.isFinite(seconds) ? seconds : 0);
  const factor = 10 ** decimals;
  const rounded = Math.round(safe * factor) / factor;
  const h = Math.floor(rounded / 3600);
  const m = Math.floor((rounded % 3600) / 60);
  const s = rounded - h * 3600 - m * 60;
  const sec = decimals ? s.toFixed(decimals).padStart(3 + decimals, "0") : String(Math.floor(s)).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** The accessible name of a bar: "SPEAKER_00, 1.20 s to 3.40 s". */
export function barLabel(bar: Pick<Bar, "speaker" | "start" | "end">): string {
  return `${bar.speaker}, ${bar.start.toFixed(2)} s to ${bar.end.toFixed(2)} s`;
}
