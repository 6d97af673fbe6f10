// A time-series chart over uPlot: created once, then updated in place with setData (no remount,
// no flicker), sized to its container by a ResizeObserver, colored from the CSS variables of the
// current theme (recreated when the theme changes). The legend is HTML: the latest values, or the
// values under the cursor while it hovers the plot.
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export type Formatter = (value: number | null | undefined) => string;

export interface ChartSeries {
  label: string;
  /** A CSS variable (default: --chart-1..4 in turn). */
  color?: string;
  dash?: number[];
}

export interface ChartProps {
  title: string;
  /** [times in unix seconds, ...one array per series]. */
  data: uPlot.AlignedData;
  series: ChartSeries[];
  format: Formatter;
  /** Fixed bounds of the y axis; null: from the data (from 0 up). */
  range?: [number | null, number | null];
  height?: number;
}

export const PALETTE = ["--chart-1", "--chart-2", "--chart-3", "--chart-4"];

export interface Theme {
  text: string;
  muted: string;
  grid: string;
  colors: string[];
}

/** The chart colors of the current theme, from the CSS variables on <html>. */
export function readTheme(series: ChartSeries[], root: Element = document.documentElement): Theme {
  const style = getComputedStyle(root);
  const read = (name: string, fallback: string) => style.getPropertyValue(name).trim() || fallback;
  return {
    text: read("--text", "#1b1f24"),
    muted: read("--muted", "#4a5360"),
    grid: read("--border", "#c9ced6"),
    colors: series.map((item, index) => read(item.color ?? PALETTE[index % PALETTE.length], "#1f5a96")),
  };
}

/** The y range: fixed bounds where given, otherwise from 0 (or the data's minimum below it) to a bit above the maximum. */
export function yRange(fixed: [number | null, number | null] | undefined, dataMin: number | null, dataMax: number | null): [number, number] {
  const low = fixed?.[0] ?? Math.min(0, dataMin ?? 0);
  let high = fixed?.[1] ?? Math.max(dataMax ?? 0, low);
  if (fixed?.[1] == null) high = high > low ? low + (high - low) * 1.08 : low + 1;
  if (high <= low) high = low + 1;
  return [low, high];
}

/** The x range: the data's, or the minute up to a lone sample (or now). */
export function xRange(min: number | null, max: number | null): [number, number] {
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) {
    const now = Date.now() / 1000;
    return [now - 60, now];
  }
  return max > min ? [min, max] : [max - 60, max];
}

const two = (n: number) => String(n).padStart(2, "0");

/** Time axis labels: hh:mm, with seconds when ticks are less than a minute apart. */
export function timeLabels(splits: number[], increment: number): string[] {
  return splits.map((t) => {
    const date = new Date(t * 1000);
    const clock = `${two(date.getHours())}:${two(date.getMinutes())}`;
    return increment < 60 ? `${clock}:${two(date.getSeconds())}` : clock;
  });
}

const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif';

export interface OptionsInput {
  width: number;
  height: number;
  series: ChartSeries[];
  theme: Theme;
  format: () => Formatter;
  range: () => [number | null, number | null] | undefined;
  onCursor?: (index: number | null) => void;
}

/** uPlot options for a time chart (pure: the tests read them). */
export function chartOptions(input: OptionsInput): uPlot.Options {
  const { theme } = input;
  const axis = { stroke: theme.text, font: FONT, grid: { stroke: theme.grid, width: 1 }, ticks: { stroke: theme.grid, width: 1, size: 4 } };
  return {
    width: input.width,
    height: input.height,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    scales: {
      // One sample (or none) gives no span: show the minute before it, not uPlot's default around it.
      // (uPlot widens a lone time value to a whole day before this is called, so read the data.)
      x: {
        time: true,
        range: (self) => {
          const xs = (self.data?.[0] ?? []) as ArrayLike<number>;
          return xs.length ? xRange(xs[0], xs[xs.length - 1]) : xRange(null, null);
        },
      },
      y: {
        range: (_self, min, max) => yRange(input.range(), Number.isFinite(min) ? min : null, Number.isFinite(max) ? max : null),
      },
    },
    axes: [
      { ...axis, space: 70, values: (_self, splits, _axisIdx, _space, increment) => timeLabels(splits, increment) },
      {
        ...axis,
        values: (_self, splits) => splits.map((value) => input.format()(value)),
        // Wide enough for the longest label ("1023.9 MiB"), at about 7 px a character.
        size: (_self, values) => Math.max(40, 14 + 7 * Math.max(0, ...(values ?? []).map((value) => String(value).length))),
      },
    ],
    series: [
      {},
      ...input.series.map((item, index) => ({
        label: item.label,
        stroke: theme.colors[index],
        width: 2,
        dash: item.dash,
        spanGaps: false,
        // A value between gaps draws no line: show it as a dot.
        points: { show: (self: uPlot, seriesIdx: number) => hasIsolated(self.data[seriesIdx] as ArrayLike<number | null | undefined>), size: 5 },
      })),
    ],
    hooks: input.onCursor ? { setCursor: [(self: uPlot) => input.onCursor?.(self.cursor.idx ?? null)] } : undefined,
  };
}

const present = (value: number | null | undefined): boolean => value !== null && value !== undefined;

/** True when some value has no neighbor on either side (a line cannot show it). */
export function hasIsolated(values: ArrayLike<number | null | undefined> | undefined): boolean {
  if (!values) return false;
  for (let i = 0; i < values.length; i += 1) {
    if (present(values[i]) && !present(values[i - 1]) && !present(values[i + 1])) return true;
  }
  return false;
}

/** The value of series `s` (1-based, as in AlignedData) at `index`, or its last non-null value. */
export function valueAt(data: uPlot.AlignedData, s: number, index: number | null): number | null {
  const values = data[s] as ArrayLike<number | null | undefined> | undefined;
  if (!values) return null;
  if (index !== null) return values[index] ?? null;
  for (let i = values.length - 1; i >= 0; i -= 1) {
    const value = values[i];
    if (value !== null && value !== undefined && Number.isFinite(value)) return value;
  }
  return null;
}

/** A string that changes when the color scheme does (data-theme on <html>, or the system's preference). */
function useThemeKey(): string {
  const compute = () => {
    const dark = typeof window.matchMedia === "function" && window.matchMedia("(prefers-color-scheme: dark)").matches;
    return `${document.documentElement.dataset.theme ?? "system"}:${dark ? "dark" : "light"}`;
  };
  const [key, setKey] = useState(compute);
  useEffect(() => {
    const update = () => setKey(compute());
    const observer = new MutationObserver(update);
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    const media = typeof window.matchMedia === "function" ? window.matchMedia("(prefers-color-scheme: dark)") : null;
    media?.addEventListener?.("change", update);
    return () => {
      observer.disconnect();
      media?.removeEventListener?.("change", update);
    };
  }, []);
  return key;
}

export function Chart({ title, data, series, format, range, height = 160 }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef({ data, format, range });
  latest.current = { data, format, range };
  const [cursor, setCursor] = useState<number | null>(null);
  const themeKey = useThemeKey();
  const seriesKey = series.map((item) => `${item.label}|${item.color ?? ""}|${item.dash?.join(",") ?? ""}`).join(";");

  // Create once per series set, height and theme; data changes go through setData below.
  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const options = chartOptions({
      width: Math.max(120, Math.floor(element.clientWidth || 300)),
      height,
      series,
      theme: readTheme(series),
      format: () => latest.current.format,
      range: () => latest.current.range,
      onCursor: setCursor,
    });
    const chart = new uPlot(options, latest.current.data, element);
    plot.current = chart;
    let frame = 0;
    const observer =
      typeof ResizeObserver === "function"
        ? new ResizeObserver((entries) => {
            const width = Math.floor(entries[0]?.contentRect.width ?? 0);
            if (width <= 0 || width === chart.width) return;
            cancelAnimationFrame(frame);
            frame = requestAnimationFrame(() => chart.setSize({ width: Math.max(120, width), height }));
          })
        : null;
    observer?.observe(element);
    return () => {
      cancelAnimationFrame(frame);
      observer?.disconnect();
      chart.destroy();
      plot.current = null;
    };
    // `series` is summarised by seriesKey; format, range and data are read through `latest`.
  }, [seriesKey, height, themeKey]);

  useEffect(() => {
    if (plot.current && plot.current.data !== data) plot.current.setData(data);
  }, [data]);

  const hovering = cursor !== null && cursor >= 0;
  const at = hovering ? cursor : null;
  const time = at !== null ? (data[0] as ArrayLike<number>)[at] : null;
  return (
    <figure className="chart">
      <figcaption>
        <span className="chart-title">{title}</span>
        {time !== null && time !== undefined && <span className="muted chart-time">{timeLabels([time], 1)[0]}</span>}
      </figcaption>
      <ul className="chart-legend" aria-label={`${title}: ${hovering ? "values at the cursor" : "latest values"}`}>
        {series.map((item, index) => (
          <li key={item.label}>
            <span className="swatch" aria-hidden="true" style={{ background: `var(${item.color ?? PALETTE[index % PALETTE.length]})` }} />
            {series.length > 1 && <span className="muted">{item.label}</span>} <strong>{format(valueAt(data, index + 1, at))}</strong>
          </li>
        ))}
      </ul>
      <div className="chart-plot" ref={box} aria-hidden="true" />
    </figure>
  );
}
