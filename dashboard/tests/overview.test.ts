import type { MetricsPoint, Status } from "../src/api/client";
import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatMs,
  formatPercent,
  formatRate,
  formatRatio,
  formatTtl,
  formatterFor,
  num,
} from "../src/pages/overview/format";
import {
  appendSample,
  counterRate,
  gpuIndices,
  gpuTimeline,
  hostTimeline,
  modelMetric,
  modelPanels,
  modelsWithData,
  pointHost,
  type Sample,
} from "../src/pages/overview/series";

describe("formatting", () => {
  it("formats bytes in binary units", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3408584)).toBe("3.3 MiB");
    expect(formatBytes(25275990016)).toBe("23.5 GiB");
    expect(formatBytes(150 * 1024 ** 3)).toBe("150 GiB");
    expect(formatBytes(null)).toBe("—");
    expect(formatBytes(Number.NaN)).toBe("—");
  });

  it("formats durations sized to the value", () => {
    expect(formatDuration(0)).toBe("0 s");
    expect(formatDuration(0.0000912)).toBe("91 µs");
    expect(formatDuration(0.0123)).toBe("12.3 ms");
    expect(formatDuration(0.673)).toBe("673 ms");
    expect(formatDuration(2.294)).toBe("2.29 s");
    expect(formatDuration(45.148)).toBe("45.1 s");
    expect(formatDuration(75)).toBe("1 min 15 s");
    expect(formatDuration(120)).toBe("2 min");
    expect(formatDuration(7260)).toBe("2 h 1 min");
    expect(formatDuration(90000)).toBe("1 d 1 h");
    expect(formatDuration(undefined)).toBe("—");
    expect(formatMs(27.97)).toBe("28 ms");
  });

  it("formats percentages, ratios and rates", () => {
    expect(formatPercent(43.21)).toBe("43%");
    expect(formatPercent(4.56)).toBe("4.6%");
    expect(formatPercent(100)).toBe("100%");
    expect(formatRatio(0.125)).toBe("13%");
    expect(formatRatio(0.05)).toBe("5%");
    expect(formatRate(0)).toBe("0/s");
    expect(formatRate(0.19813)).toBe("0.2/s");
    expect(formatRate(0.0123)).toBe("0.012/s");
    expect(formatRate(1234.5)).toBe("1,235/s");
    expect(formatterFor("celsius")(61.4)).toBe("61 °C");
    expect(formatterFor("watts")(312.2)).toBe("312 W");
    expect(formatterFor("seconds")(null)).toBe("—");
  });

  it("says how long ago, and what a TTL means", () => {
    expect(formatAgo(null, 1000)).toBe("never");
    expect(formatAgo(999.5, 1000)).toBe("just now");
    expect(formatAgo(925, 1000)).toBe("1 min 15 s ago");
    expect(formatTtl(-1)).toBe("never unloaded");
    expect(formatTtl(0)).toBe("unloaded as soon as idle");
    expect(formatTtl(600)).toBe("unloaded after 10 min idle");
  });

  it("keeps only finite numbers", () => {
    expect(num(3)).toBe(3);
    expect(num(null)).toBeNull();
    expect(num("3")).toBeNull();
    expect(num(Number.POSITIVE_INFINITY)).toBeNull();
  });
});

const point = (t: number, models: MetricsPoint["models"], extra: Record<string, unknown> = {}): MetricsPoint =>
  ({ t, models, gpus: [], ...extra }) as MetricsPoint;

describe("metrics points to series", () => {
  const points = [
    point(100, { qwen: { requests_per_s: 0, generation_tokens_total: 10, kv_cache_usage_perc: 0.1 } }),
    point(105, { qwen: { requests_per_s: 1, generation_tokens_total: 60, kv_cache_usage_perc: 0.2 }, system: { requests_per_s: 0.2 } }),
    point(110, { qwen: { requests_per_s: 2, generation_tokens_total: 5 }, langid: { requests_per_s: null } }),
  ];

  it("reads one metric, null where the model or metric is missing", () => {
    expect(modelMetric(points, "qwen", "requests_per_s")).toEqual([0, 1, 2]);
    expect(modelMetric(points, "system", "requests_per_s")).toEqual([null, 0.2, null]);
    expect(modelMetric(points, "qwen", "latency_p50_s")).toEqual([null, null, null]);
  });

  it("derives a rate from a counter, null across a reset", () => {
    expect(counterRate([100, 105, 110], [10, 60, 5])).toEqual([null, 10, null]);
    expect(counterRate([100, 105, 110], [null, 60, 70])).toEqual([null, null, 2]);
  });

  it("lists the models with data only", () => {
    expect(modelsWithData(points)).toEqual(["qwen", "system"]);
  });

  it("builds only the panels and series that have data, with fallbacks", () => {
    const panels = modelPanels(points, "qwen");
    expect(panels.map((panel) => panel.id)).toEqual(["requests", "tokens", "kv"]);
    const tokens = panels.find((panel) => panel.id === "tokens")!;
    expect(tokens.labels).toEqual(["generated"]);
    expect(tokens.data).toEqual([[100, 105, 110], [null, 10, null]]);
    expect(panels[0].labels).toEqual(["success"]); // no failures_per_s: no "failure" series
  });

  it("prefers the p50/p95 and tokens_per_s keys when the adapter sends them", () => {
    const newer = [
      point(1, { qwen: { latency_p50_s: 0.1, latency_p95_s: 0.4, avg_compute_ms: 90, tokens_per_s: 12, ttft_p50_s: 0.05, in_flight: 2, queued: 1 } }),
      point(2, { qwen: { latency_p50_s: 0.2, latency_p95_s: null, avg_compute_ms: 80, tokens_per_s: 15, ttft_p50_s: null, in_flight: 0, queued: 0 } }),
    ];
    const panels = modelPanels(newer, "qwen");
    const byId = Object.fromEntries(panels.map((panel) => [panel.id, panel]));
    expect(byId.latency.labels).toEqual(["p50", "p95"]);
    expect(byId.latency.data).toEqual([[1, 2], [0.1, 0.2], [0.4, null]]);
    expect(byId.ttft.labels).toEqual(["p50"]);
    expect(byId.tokens.data[1]).toEqual([12, 15]);
    expect(byId.queue.labels).toEqual(["in flight", "queued"]);
  });

  it("falls back to avg compute and queue (in seconds) without percentiles", () => {
    const older = [point(1, { system: { avg_compute_ms: 20, avg_queue_ms: null } }), point(2, { system: { avg_compute_ms: 30, avg_queue_ms: 0.5 } })];
    const latency = modelPanels(older, "system").find((panel) => panel.id === "latency")!;
    expect(latency.labels).toEqual(["avg compute", "avg queue"]);
    expect(latency.data[1]).toEqual([0.02, 0.03]);
    expect(latency.data[2]).toEqual([null, 0.0005]);
  });
});

const status = (t: number, extra: Partial<Status> = {}): Status =>
  ({
    collected_at: t,
    host: { adapter: { cpu_percent: 5, memory_used_bytes: 10, memory_total_bytes: 100, cpu_count: 2, load_average: [] }, triton: null },
    gpus: { available: true, devices: [{ index: 0, utilization_percent: 50, temperature_c: 60, power_w: 100 }], note: null, dcgm: null },
    ...extra,
  }) as unknown as Status;

describe("host and GPU timelines", () => {
  it("reads a point's host defensively", () => {
    expect(pointHost(point(1, {}))).toBeNull();
    expect(pointHost(point(1, {}, { host: null }))).toBeNull();
    expect(pointHost(point(1, {}, { host: { cpu_percent: 12, memory_used_bytes: 5, memory_total_bytes: 9 } }))).toEqual({
      cpu_percent: 12,
      memory_used_bytes: 5,
      memory_total_bytes: 9,
    });
  });

  it("appends one sample per status, bounded", () => {
    let samples: Sample[] = [];
    samples = appendSample(samples, status(1), 2);
    samples = appendSample(samples, status(1), 2);
    expect(samples).toHaveLength(1);
    samples = appendSample(samples, status(2), 2);
    samples = appendSample(samples, status(3), 2);
    expect(samples.map((sample) => sample.t)).toEqual([2, 3]);
    expect(samples[0].host?.cpu_percent).toBe(5);
    expect(samples[0].gpus[0].temperature_c).toBe(60);
  });

  it("takes host values from the points, else from the status samples", () => {
    const samples = appendSample([], status(7), 10);
    const bare = [point(1, {}), point(2, {})];
    expect(hostTimeline(bare, samples)).toEqual({ t: [7], cpu: [5], used: [10], total: 100 });
    const withHost = [point(1, {}, { host: { cpu_percent: 30, memory_used_bytes: 4, memory_total_bytes: 8 } }), point(2, {}, { host: null })];
    expect(hostTimeline(withHost, samples)).toEqual({ t: [1, 2], cpu: [30, null], used: [4, null], total: 8 });
  });

  it("takes GPU fields from the points, else from the samples", () => {
    const samples = appendSample([], status(9), 10);
    const points = [
      point(1, {}, { gpus: [{ index: 0, utilization_percent: 20, memory_used_bytes: 1 }] }),
      point(2, {}, { gpus: [{ index: 0, utilization_percent: 40, memory_used_bytes: 2 }] }),
    ];
    expect(gpuTimeline(points, samples, 0, "utilization_percent")).toEqual([[1, 2], [20, 40]]);
    expect(gpuTimeline(points, samples, 0, "temperature_c")).toEqual([[9], [60]]);
    expect(gpuIndices([], points)).toEqual([0]);
    expect(gpuIndices([{ index: 1 }, { index: 0 }], [])).toEqual([0, 1]);
  });
});
