// Data shaping of the Overview: metrics points (GET /api/admin/metrics) and status samples into the
// column arrays uPlot draws ([times, ...series], null where a point has no value).
import type { MetricsPoint, Status } from "../../api/client";
import { num, type Unit } from "./format";

export type Values = (number | null)[];

export interface HostPoint {
  cpu_percent: number | null;
  memory_used_bytes: number | null;
  memory_total_bytes: number | null;
}

/** A point's `host` ({cpu_percent, memory_used_bytes, memory_total_bytes} | null), read defensively:
 * older adapters send no `host` at all, and the generated type may not know it yet. */
export function pointHost(point: MetricsPoint | Record<string, unknown>): HostPoint | null {
  const host = (point as { host?: unknown }).host;
  if (!host || typeof host !== "object") return null;
  const record = host as Record<string, unknown>;
  return {
    cpu_percent: num(record.cpu_percent),
    memory_used_bytes: num(record.memory_used_bytes),
    memory_total_bytes: num(record.memory_total_bytes),
  };
}

/** A status host's facts (Status.host.triton is an untyped dict) in the same shape. */
export function hostFacts(value: unknown): HostPoint | null {
  if (!value || typeof value !== "object") return null;
  const record = value as Record<string, unknown>;
  const facts = {
    cpu_percent: num(record.cpu_percent),
    memory_used_bytes: num(record.memory_used_bytes),
    memory_total_bytes: num(record.memory_total_bytes),
  };
  return facts.cpu_percent === null && facts.memory_used_bytes === null ? null : facts;
}

export const hasData = (values: Values): boolean => values.some((value) => value !== null);

export const times = (points: { t: number }[]): number[] => points.map((point) => point.t);

/** One model's metric over the points; null where the model or the metric is missing. */
export function modelMetric(points: MetricsPoint[], model: string, metric: string): Values {
  return points.map((point) => num(point.models?.[model]?.[metric]));
}

/** The per-second rate of a cumulative counter (vLLM's generation_tokens_total); null across a reset or a gap. */
export function counterRate(ts: number[], counter: Values): Values {
  return counter.map((value, index) => {
    if (index === 0 || value === null) return null;
    const before = counter[index - 1];
    const elapsed = ts[index] - ts[index - 1];
    if (before === null || !(elapsed > 0) || value < before) return null;
    return (value - before) / elapsed;
  });
}

const scale = (values: Values, factor: number): Values => values.map((value) => (value === null ? null : value * factor));

/** Models that have any value in any point, in name order. */
export function modelsWithData(points: MetricsPoint[]): string[] {
  const names = new Set<string>();
  for (const point of points) {
    for (const [name, metrics] of Object.entries(point.models ?? {})) {
      if (Object.values(metrics ?? {}).some((value) => num(value) !== null)) names.add(name);
    }
  }
  return [...names].sort();
}

export interface SeriesSpec {
  label: string;
  values: (points: MetricsPoint[], model: string) => Values;
}

export interface PanelSpec {
  id: string;
  title: string;
  unit: Unit;
  range?: [number | null, number | null];
  series: SeriesSpec[];
  /** Drawn only when none of `series` has data (older adapters, non-vLLM models). */
  fallback?: SeriesSpec[];
}

const metric =
  (name: string, factor = 1): SeriesSpec["values"] =>
  (points, model) => {
    const values = modelMetric(points, model, name);
    return factor === 1 ? values : scale(values, factor);
  };

/** The panels of vLLM's and Triton's Grafana boards, per model. */
export const MODEL_PANELS: PanelSpec[] = [
  {
    id: "requests",
    title: "Request rate",
    unit: "per_s",
    series: [
      { label: "success", values: metric("requests_per_s") },
      { label: "failure", values: metric("failures_per_s") },
    ],
  },
  {
    id: "latency",
    title: "Latency",
    unit: "seconds",
    series: [
      { label: "p50", values: metric("latency_p50_s") },
      { label: "p95", values: metric("latency_p95_s") },
    ],
    fallback: [
      { label: "avg compute", values: metric("avg_compute_ms", 1 / 1000) },
      { label: "avg queue", values: metric("avg_queue_ms", 1 / 1000) },
    ],
  },
  {
    id: "ttft",
    title: "Time to first token",
    unit: "seconds",
    series: [
      { label: "p50", values: metric("ttft_p50_s") },
      { label: "p95", values: metric("ttft_p95_s") },
    ],
  },
  {
    id: "tokens",
    title: "Tokens/s",
    unit: "per_s",
    series: [{ label: "generated", values: metric("tokens_per_s") }],
    fallback: [{ label: "generated", values: (points, model) => counterRate(times(points), modelMetric(points, model, "generation_tokens_total")) }],
  },
  {
    id: "queue",
    title: "In flight and queued",
    unit: "count",
    series: [
      { label: "in flight", values: metric("in_flight") },
      { label: "queued", values: metric("queued") },
    ],
    fallback: [
      { label: "running", values: metric("num_requests_running") },
      { label: "waiting", values: metric("num_requests_waiting") },
    ],
  },
  {
    id: "kv",
    title: "KV cache usage",
    unit: "ratio",
    range: [0, 1],
    series: [{ label: "used", values: metric("kv_cache_usage_perc") }],
  },
];

export interface Panel {
  id: string;
  title: string;
  unit: Unit;
  range?: [number | null, number | null];
  labels: string[];
  data: [number[], ...Values[]];
}

/** The panels of one model that have data, each with only its series that have data. */
export function modelPanels(points: MetricsPoint[], model: string, specs: PanelSpec[] = MODEL_PANELS): Panel[] {
  const ts = times(points);
  const panels: Panel[] = [];
  for (const spec of specs) {
    let drawn = spec.series.map((series) => ({ label: series.label, values: series.values(points, model) })).filter((s) => hasData(s.values));
    if (!drawn.length && spec.fallback) {
      drawn = spec.fallback.map((series) => ({ label: series.label, values: series.values(points, model) })).filter((s) => hasData(s.values));
    }
    if (!drawn.length) continue;
    panels.push({
      id: spec.id,
      title: spec.title,
      unit: spec.unit,
      range: spec.range,
      labels: drawn.map((series) => series.label),
      data: [ts, ...drawn.map((series) => series.values)],
    });
  }
  return panels;
}

// Samples taken from each new status: the fallback for what older metrics points lack ----------

export interface GpuSample {
  index: number;
  utilization_percent: number | null;
  memory_used_bytes: number | null;
  memory_total_bytes: number | null;
  temperature_c: number | null;
  power_w: number | null;
}

export interface Sample {
  t: number;
  host: HostPoint | null;
  gpus: GpuSample[];
}

export const GPU_FIELDS = ["utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_w"] as const;
export type GpuField = (typeof GPU_FIELDS)[number];

export function gpuSample(device: Record<string, unknown>, position: number): GpuSample {
  const index = num(device.index);
  return {
    index: index ?? position,
    utilization_percent: num(device.utilization_percent),
    memory_used_bytes: num(device.memory_used_bytes),
    memory_total_bytes: num(device.memory_total_bytes),
    temperature_c: num(device.temperature_c),
    power_w: num(device.power_w),
  };
}

/** The sample list with this status appended (once per collected_at), keeping the last `max`. */
export function appendSample(samples: Sample[], status: Status, max: number): Sample[] {
  const last = samples[samples.length - 1];
  if (last && last.t >= status.collected_at) return samples;
  const sample: Sample = {
    t: status.collected_at,
    host: hostFacts(status.host?.triton) ?? hostFacts(status.host?.adapter),
    gpus: (status.gpus?.devices ?? []).map((device, position) => gpuSample(device, position)),
  };
  const next = [...samples, sample];
  return next.length > max ? next.slice(next.length - max) : next;
}

/** One GPU field over time: from the metrics points when they carry it, else from the status samples. */
export function gpuTimeline(points: MetricsPoint[], samples: Sample[], index: number, field: GpuField): [number[], Values] {
  const fromPoints = points.map((point) => {
    const devices = (point.gpus ?? []).map((device, position) => gpuSample(device, position));
    return devices.find((device) => device.index === index)?.[field] ?? null;
  });
  if (hasData(fromPoints)) return [times(points), fromPoints];
  return [times(samples), samples.map((sample) => sample.gpus.find((device) => device.index === index)?.[field] ?? null)];
}

/** The host's CPU and memory over time: from the metrics points' `host` when present, else from the samples. */
export function hostTimeline(points: MetricsPoint[], samples: Sample[]): { t: number[]; cpu: Values; used: Values; total: number | null } {
  const hosts = points.map(pointHost);
  const source = hosts.some((host) => host !== null)
    ? { t: times(points), hosts }
    : { t: times(samples), hosts: samples.map((sample) => sample.host) };
  const totals = source.hosts.map((host) => host?.memory_total_bytes ?? null).filter((value): value is number => value !== null);
  return {
    t: source.t,
    cpu: source.hosts.map((host) => host?.cpu_percent ?? null),
    used: source.hosts.map((host) => host?.memory_used_bytes ?? null),
    total: totals.length ? totals[totals.length - 1] : null,
  };
}

/** The GPU indices to draw: those the status lists, else those the points mention. */
export function gpuIndices(devices: Record<string, unknown>[], points: MetricsPoint[]): number[] {
  const indices = new Set<number>(devices.map((device, position) => num(device.index) ?? position));
  if (!indices.size) for (const point of points) (point.gpus ?? []).forEach((device, position) => indices.add(num(device.index) ?? position));
  return [...indices].sort((a, b) => a - b);
}
