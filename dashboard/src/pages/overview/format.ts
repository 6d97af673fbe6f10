// Formatting helpers of the admin pages: pure functions, "—" for a missing value, never NaN.

const DASH = "—";

export const isNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);

/** A finite number, or null: metric values arrive as number | null | missing. */
export function num(value: unknown): number | null {
  return isNumber(value) ? value : null;
}

function trimmed(value: number, digits: number): string {
  // 1.0 → "1", 12.50 → "12.5": fewer characters for the same information.
  return String(Number(value.toFixed(digits)));
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 3408584 → "3.3 MiB" (binary units, as nvidia-smi and the OS report memory). */
export function formatBytes(bytes: number | null | undefined): string {
  if (!isNumber(bytes)) return DASH;
  const sign = bytes < 0 ? "-" : "";
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : value < 10 ? 1 : value < 100 ? 1 : 0;
  return `${sign}${trimmed(value, digits)} ${BYTE_UNITS[unit]}`;
}

/** 43.21 → "43%"; 4.56 → "4.6%". */
export function formatPercent(percent: number | null | undefined): string {
  if (!isNumber(percent)) return DASH;
  return `${trimmed(percent, Math.abs(percent) < 10 ? 1 : 0)}%`;
}

/** A 0..1 fraction as a percentage: 0.125 → "12.5%". */
export function formatRatio(ratio: number | null | undefined): string {
  return isNumber(ratio) ? formatPercent(ratio * 100) : DASH;
}

/** Seconds in words sized to the value: 0.0123 → "12.3 ms", 75 → "1 min 15 s", 7260 → "2 h 1 min". */
export function formatDuration(seconds: number | null | undefined): string {
  if (!isNumber(seconds)) return DASH;
  const sign = seconds < 0 ? "-" : "";
  const s = Math.abs(seconds);
  if (s === 0) return "0 s";
  if (s < 0.001) return `${sign}${trimmed(s * 1e6, 0)} µs`;
  if (s < 1) return `${sign}${trimmed(s * 1000, s < 0.01 ? 2 : s < 0.1 ? 1 : 0)} ms`;
  if (s < 60) return `${sign}${trimmed(s, s < 10 ? 2 : 1)} s`;
  const whole = Math.round(s);
  if (whole < 3600) {
    const rest = whole % 60;
    return `${sign}${Math.floor(whole / 60)} min${rest ? ` ${rest} s` : ""}`;
  }
  if (whole < 86400) {
    const minutes = Math.floor((whole % 3600) / 60);
    return `${sign}${Math.floor(whole / 3600)} h${minutes ? ` ${minutes} min` : ""}`;
  }
  const hours = Math.floor((whole % 86400) / 3600);
  return `${sign}${Math.floor(whole / 86400)} d${hours ? ` ${hours} h` : ""}`;
}

/** Milliseconds, as Triton's statistics give them. */
export function formatMs(ms: number | null | undefined): string {
  return isNumber(ms) ? formatDuration(ms / 1000) : DASH;
}

/** A count with at most `digits` decimals and thousands separators: 12345.6 → "12,346". */
export function formatNumber(value: number | null | undefined, digits = 0): string {
  if (!isNumber(value)) return DASH;
  return value.toLocaleString("en-US", { maximumFractionDigits: digits });
}

/** A per-second rate: 0.198 → "0.2/s", 0 → "0/s", 1234 → "1,234/s". */
export function formatRate(value: number | null | undefined): string {
  if (!isNumber(value)) return DASH;
  const abs = Math.abs(value);
  const digits = abs === 0 ? 0 : abs < 0.1 ? 3 : abs < 10 ? 2 : abs < 100 ? 1 : 0;
  return `${formatNumber(value, digits)}/s`;
}

/** How long ago a unix time (seconds) was, from `now` (unix seconds). */
export function formatAgo(unixSeconds: number | null | undefined, now: number): string {
  if (!isNumber(unixSeconds)) return "never";
  const delta = now - unixSeconds;
  if (delta < 2) return "just now";
  return `${formatDuration(Math.round(delta))} ago`;
}

/** A model's idle TTL (runtime.ttl_s, as the adapter's settings define it): -1 never, 0 as soon as idle, N seconds. */
export function formatTtl(ttl: number | null | undefined): string {
  if (!isNumber(ttl) || ttl < 0) return "never unloaded";
  if (ttl === 0) return "unloaded as soon as idle";
  return `unloaded after ${formatDuration(ttl)} idle`;
}

/** A clock time for axes and "as of" notes: 14:05:09. */
export function formatClock(unixSeconds: number, withSeconds = true): string {
  const date = new Date(unixSeconds * 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}${withSeconds ? `:${pad(date.getSeconds())}` : ""}`;
}

export type Unit = "percent" | "ratio" | "bytes" | "seconds" | "per_s" | "count" | "celsius" | "watts";

/** The formatter of a chart's values in one unit. */
export function formatterFor(unit: Unit): (value: number | null | undefined) => string {
  switch (unit) {
    case "percent":
      return formatPercent;
    case "ratio":
      return formatRatio;
    case "bytes":
      return formatBytes;
    case "seconds":
      return formatDuration;
    case "per_s":
      return formatRate;
    case "count":
      return (value) => formatNumber(value, 1);
    case "celsius":
      return (value) => (isNumber(value) ? `${trimmed(value, 0)} °C` : DASH);
    case "watts":
      return (value) => (isNumber(value) ? `${trimmed(value, value < 10 ? 1 : 0)} W` : DASH);
  }
}
