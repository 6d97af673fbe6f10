import { useEffect, useMemo, useState } from "react";
import { admin, must, type MetricsPoint, type Status } from "../api/client";
import { usePoll } from "../lib/usePoll";
import { Chart } from "../components/Chart";
import { AdminProblem } from "./settings/AdminProblem";
import { StateBadge } from "./models/StateBadge";
import { formatAgo, formatBytes, formatMs, formatNumber, formatPercent, formatterFor, num } from "./overview/format";
import { appendSample, gpuIndices, gpuTimeline, hostFacts, hostTimeline, modelPanels, modelsWithData, type Sample } from "./overview/series";
import "./admin.css";

const POLL_MS = 2000;
const MAX_SAMPLES = 450; // 15 minutes of 2 s samples

export function Overview() {
  const status = usePoll(() => must(admin.GET("/api/admin/status")), POLL_MS);
  const metrics = usePoll(() => must(admin.GET("/api/admin/metrics")), POLL_MS);
  const [samples, setSamples] = useState<Sample[]>([]);
  const collectedAt = status.data?.collected_at;
  useEffect(() => {
    if (status.data) setSamples((list) => appendSample(list, status.data as Status, MAX_SAMPLES));
  }, [collectedAt]); // eslint-disable-line react-hooks/exhaustive-deps

  // New arrays only when a new point arrives, so the charts' data stays the same object in between.
  const points = metrics.data?.points;
  const lastT = points?.length ? points[points.length - 1].t : 0;
  const stablePoints = useMemo(() => points ?? [], [lastT, points?.length]); // eslint-disable-line react-hooks/exhaustive-deps

  const error = status.error ?? metrics.error;
  if (!status.data) {
    return (
      <div className="admin-page">
        {error ? <AdminProblem error={error} /> : <p className="muted" role="status">Loading the status…</p>}
      </div>
    );
  }
  const data = status.data;
  return (
    <div className="admin-page">
      <AdminProblem error={error} since={data.collected_at} />
      <TritonSection status={data} />
      <GpuSection status={data} points={stablePoints} samples={samples} />
      <HostSection status={data} points={stablePoints} samples={samples} />
      <ModelsSection status={data} points={stablePoints} />
    </div>
  );
}

function Flag({ on, yes, no }: { on: boolean; yes: string; no: string }) {
  return <span className={`flag ${on ? "ok" : "bad"}`}>{on ? `✓ ${yes}` : `✗ ${no}`}</span>;
}

function TritonSection({ status }: { status: Status }) {
  const triton = status.triton;
  return (
    <section className="card" aria-labelledby="ov-triton">
      <h2 id="ov-triton">Triton</h2>
      <div className="row flags">
        <Flag on={triton.live} yes="Live" no="Not live" />
        <Flag on={triton.ready} yes="Ready" no="Not ready" />
        <span className="muted">
          Updated {formatAgo(status.collected_at, Date.now() / 1000)} · profile {status.settings.profile}
        </span>
      </div>
      <dl className="facts">
        <dt>Version</dt>
        <dd>{triton.version ?? "unknown"}</dd>
        <dt>HTTP</dt>
        <dd>
          <code>{triton.http_url}</code>
        </dd>
        <dt>gRPC</dt>
        <dd>
          <code>{triton.grpc_url}</code>
        </dd>
        <dt>Metrics</dt>
        <dd>
          <code>{triton.metrics_url}</code>
        </dd>
      </dl>
      <ReplicaTable replicas={status.replicas ?? []} />
    </section>
  );
}

function ReplicaTable({ replicas }: { replicas: Status["replicas"] }) {
  if (replicas.length === 0) return null;
  return (
    <div className="table-scroll">
      <table className="replicas" aria-label="Triton replicas">
        <thead>
          <tr>
            <th scope="col">Upstream</th>
            <th scope="col">Replica</th>
            <th scope="col">State</th>
            <th scope="col">Models ready</th>
          </tr>
        </thead>
        <tbody>
          {replicas.map((replica) => {
            const ready = Object.entries(replica.models)
              .filter(([, state]) => state === "READY")
              .map(([name]) => name);
            return (
              <tr key={`${replica.upstream} ${replica.address}`} data-replica={replica.address}>
                <td>{replica.upstream}</td>
                <td>
                  <code>{replica.address}</code>
                </td>
                <td>
                  <Flag on={replica.live && replica.ready} yes="Ready" no={replica.live ? "Not ready" : "Down"} />
                </td>
                <td>{ready.length ? ready.join(", ") : <span className="muted">none</span>}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

const deviceName = (device: Record<string, unknown> | undefined, index: number) =>
  typeof device?.name === "string" && device.name ? `GPU ${index} · ${device.name}` : `GPU ${index}`;

function GpuSection({ status, points, samples }: { status: Status; points: MetricsPoint[]; samples: Sample[] }) {
  const devices = status.gpus.devices ?? [];
  const indices = status.gpus.available ? gpuIndices(devices, points) : [];
  return (
    <section aria-labelledby="ov-gpus" className="ov-section">
      <h2 id="ov-gpus">GPUs</h2>
      {indices.length === 0 ? (
        <div className="card">
          <p className="no-gpu">no GPU</p>
          {status.gpus.note && <p className="muted">{status.gpus.note}</p>}
        </div>
      ) : (
        <div className="gpu-list">
          {indices.map((index) => {
            const device = devices.find((item, position) => (num(item.index) ?? position) === index);
            return <GpuCard key={index} index={index} device={device} points={points} samples={samples} />;
          })}
        </div>
      )}
    </section>
  );
}

function GpuCard({ index, device, points, samples }: { index: number; device?: Record<string, unknown>; points: MetricsPoint[]; samples: Sample[] }) {
  const charts = useMemo(() => {
    const util = gpuTimeline(points, samples, index, "utilization_percent");
    const used = gpuTimeline(points, samples, index, "memory_used_bytes");
    const temperature = gpuTimeline(points, samples, index, "temperature_c");
    const power = gpuTimeline(points, samples, index, "power_w");
    return { util, used, temperature, power };
  }, [points, samples, index]);
  const total = num(device?.memory_total_bytes);
  const powerLimit = num(device?.power_limit_w);
  return (
    <article className="card" aria-labelledby={`gpu-${index}`}>
      <h3 id={`gpu-${index}`}>{deviceName(device, index)}</h3>
      <p className="muted gpu-now">
        {formatPercent(num(device?.utilization_percent))} busy · {formatBytes(num(device?.memory_used_bytes))} of {formatBytes(total)} ·{" "}
        {formatterFor("celsius")(num(device?.temperature_c))} · {formatterFor("watts")(num(device?.power_w))}
        {powerLimit !== null && ` of ${formatterFor("watts")(powerLimit)}`}
      </p>
      <div className="charts">
        <Chart title="Utilization" data={charts.util} series={[{ label: "utilization" }]} format={formatterFor("percent")} range={[0, 100]} />
        <Chart
          title="Memory used"
          data={charts.used}
          series={[{ label: "used", color: "--chart-2" }]}
          format={formatterFor("bytes")}
          range={[0, total]}
        />
        <Chart title="Temperature" data={charts.temperature} series={[{ label: "temperature", color: "--chart-3" }]} format={formatterFor("celsius")} />
        <Chart
          title="Power"
          data={charts.power}
          series={[{ label: "power", color: "--chart-4" }]}
          format={formatterFor("watts")}
          range={[0, powerLimit]}
        />
      </div>
    </article>
  );
}

function HostFactsList({ title, facts }: { title: string; facts: unknown }) {
  const host = hostFacts(facts);
  const record = (facts ?? {}) as Record<string, unknown>;
  const load = Array.isArray(record.load_average) ? record.load_average.map((value) => formatNumber(num(value), 2)).join(" · ") : null;
  if (!host) return null;
  const used = host.memory_used_bytes;
  const total = host.memory_total_bytes;
  return (
    <div>
      <h3>{title}</h3>
      <dl className="facts">
        <dt>CPU</dt>
        <dd>
          {formatPercent(host.cpu_percent)}
          {num(record.cpu_count) !== null && <span className="muted"> of {num(record.cpu_count)} cores</span>}
        </dd>
        <dt>RAM</dt>
        <dd>
          {formatBytes(used)} of {formatBytes(total)}
          {used !== null && total ? <span className="muted"> ({formatPercent((used / total) * 100)})</span> : null}
        </dd>
        {load && (
          <>
            <dt>Load</dt>
            <dd>{load}</dd>
          </>
        )}
      </dl>
    </div>
  );
}

function HostSection({ status, points, samples }: { status: Status; points: MetricsPoint[]; samples: Sample[] }) {
  const timeline = useMemo(() => hostTimeline(points, samples), [points, samples]);
  const cpu = useMemo(() => [timeline.t, timeline.cpu] as [number[], (number | null)[]], [timeline]);
  const memory = useMemo(() => [timeline.t, timeline.used] as [number[], (number | null)[]], [timeline]);
  const triton = status.host.triton;
  return (
    <section className="card" aria-labelledby="ov-host">
      <h2 id="ov-host">Host</h2>
      <div className="host-facts">
        <HostFactsList title="Triton's host" facts={triton} />
        <HostFactsList title="Adapter's host" facts={status.host.adapter} />
      </div>
      <div className="charts">
        <Chart title="CPU" data={cpu} series={[{ label: "CPU" }]} format={formatterFor("percent")} range={[0, 100]} />
        <Chart title="RAM used" data={memory} series={[{ label: "RAM", color: "--chart-2" }]} format={formatterFor("bytes")} range={[0, timeline.total]} />
      </div>
    </section>
  );
}

function ModelsSection({ status, points }: { status: Status; points: MetricsPoint[] }) {
  const names = useMemo(() => modelsWithData(points), [points]);
  const now = Date.now() / 1000;
  return (
    <section aria-labelledby="ov-models" className="ov-section">
      <h2 id="ov-models">Models</h2>
      <div className="card table-scroll">
        <table className="models-table">
          <caption className="visually-hidden">State of each model</caption>
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col">State</th>
              <th scope="col">Backend</th>
              <th scope="col" className="num">
                In flight
              </th>
              <th scope="col" className="num">
                Success
              </th>
              <th scope="col" className="num">
                Failure
              </th>
              <th scope="col" className="num">
                Avg request
              </th>
              <th scope="col">Last request</th>
            </tr>
          </thead>
          <tbody>
            {Object.entries(status.models).map(([key, model]) => (
              <tr key={key}>
                <th scope="row">
                  <a href="#/models">{key}</a>
                </th>
                <td>
                  <StateBadge state={model.state} />
                </td>
                <td>{model.backend}</td>
                <td className="num">{formatNumber(model.runtime.in_flight)}</td>
                <td className="num">{formatNumber(model.statistics.success)}</td>
                <td className={`num${model.statistics.failure ? " bad" : ""}`}>{formatNumber(model.statistics.failure)}</td>
                <td className="num">{formatMs(model.statistics.avg_request_ms)}</td>
                <td>{formatAgo(model.statistics.last_inference, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {names.length === 0 ? (
        <p className="muted">No model has metrics yet: they appear once a model is loaded and sampled.</p>
      ) : (
        names.map((name) => <ModelCharts key={name} name={name} points={points} />)
      )}
    </section>
  );
}

function ModelCharts({ name, points }: { name: string; points: MetricsPoint[] }) {
  const panels = useMemo(() => modelPanels(points, name), [points, name]);
  if (!panels.length) return null;
  return (
    <article className="card model-charts" aria-labelledby={`ov-model-${name}`}>
      <h3 id={`ov-model-${name}`}>{name}</h3>
      <div className="charts">
        {panels.map((panel) => (
          <Chart
            key={panel.id}
            title={panel.title}
            data={panel.data}
            series={panel.labels.map((label) => ({ label }))}
            format={formatterFor(panel.unit)}
            range={panel.range}
          />
        ))}
      </div>
    </article>
  );
}
