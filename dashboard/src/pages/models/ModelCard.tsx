import { useState, type FormEvent } from "react";
import { admin, must, type DownloadState, type ModelState } from "../../api/client";
import { formatBytes, formatDuration, formatMs, formatNumber, formatTtl, formatAgo } from "../overview/format";
import { ConfirmDialog } from "./ConfirmDialog";
import { StateBadge } from "./StateBadge";
import { downloadText, gpuLabel, hasHubSource, isProblem, loadBody, parseInstances, placementText, reasonText } from "./model";

type Action = "load" | "unload" | "download";

export interface ModelCardProps {
  modelKey: string;
  model: ModelState;
  /** status.gpus.devices (empty without GPU). */
  gpus: Record<string, unknown>[];
  lazyLoad: boolean;
  /** status.collected_at, to tell a status older than this card's last action. */
  collectedAt: number;
  /** Refreshes the status after an action. */
  onChanged: () => void;
}

const ACTION_WORDS: Record<Action, string> = { load: "Loading…", unload: "Unloading…", download: "Starting the download…" };

export function ModelCard({ modelKey, model, gpus, lazyLoad, collectedAt, onChanged }: ModelCardProps) {
  const [busy, setBusy] = useState<Action | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [gpu, setGpu] = useState("");
  const [instances, setInstances] = useState("");
  const [confirming, setConfirming] = useState(false);
  // The answer of the last action, shown until a status sampled after it arrives (the monitor samples every few seconds).
  const [after, setAfter] = useState<{ state: string; at: number } | null>(null);
  const [started, setStarted] = useState<DownloadState | null>(null);

  const id = `model-${modelKey}`;
  const fresh = after && collectedAt < after.at && Date.now() / 1000 - after.at < 20 ? after.state : null;
  const state = busy === "load" ? "LOADING" : busy === "unload" ? "UNLOADING" : (fresh ?? model.state);
  const reason = state === "READY" || state === "LOADING" ? null : reasonText(model.reason ?? model.last_error);
  const working = busy !== null || state === "LOADING" || state === "UNLOADING";
  const download = model.download ?? started;
  const downloading = download?.state === "running";
  const parsed = parseInstances(instances);

  async function run(action: Action, call: () => Promise<string | null>, nextState?: string) {
    setBusy(action);
    setError(null);
    setNotice(null);
    try {
      const message = await call();
      setNotice(message);
      if (nextState) setAfter({ state: nextState, at: Date.now() / 1000 });
    } catch (cause) {
      setError(cause instanceof Error ? cause.message : String(cause));
    } finally {
      setBusy(null);
      onChanged();
    }
  }

  function load(event: FormEvent) {
    event.preventDefault();
    if (parsed.error) {
      setError(parsed.error);
      return;
    }
    const body = loadBody(gpu, parsed.value);
    void run(
      "load",
      async () => {
        const loaded = await must(admin.POST("/api/admin/models/{key}/load", { params: { path: { key: modelKey } }, body }));
        return `Loaded${loaded.load_duration_s != null ? ` in ${formatDuration(loaded.load_duration_s)}` : ""}: ${placementText(loaded.instance_group)}.`;
      },
      "READY",
    );
  }

  function unload() {
    setConfirming(false);
    void run(
      "unload",
      async () => {
        await must(admin.POST("/api/admin/models/{key}/unload", { params: { path: { key: modelKey } } }));
        return "Unloaded.";
      },
      "UNAVAILABLE",
    );
  }

  function startDownload() {
    void run("download", async () => {
      const answer = await must(admin.POST("/api/admin/models/{key}/download", { params: { path: { key: modelKey } } }));
      setStarted(answer.download);
      return answer.download.state === "done" ? "Downloaded: the cache is up to date." : null;
    });
  }

  const stats = model.statistics;
  const gpuOptions = gpus.map(gpuLabel);
  return (
    <article className="card model-card" aria-labelledby={id} aria-busy={working}>
      <header className="model-head">
        <h2 id={id}>{modelKey}</h2>
        <StateBadge state={state} hasReason={isProblem(reason)} />
      </header>
      {reason && (
        <p className="reason">
          <span className="muted">Reason: </span>
          {reason}
        </p>
      )}
      <dl className="facts">
        <dt>Backend</dt>
        <dd>{model.backend}</dd>
        <dt>Placement</dt>
        <dd>{placementText(model.placement)}</dd>
        <dt>Source</dt>
        <dd>{model.source ? <code>{model.source}</code> : <span className="muted">in the model repository</span>}</dd>
        <dt>Cache</dt>
        <dd>{model.cache ? (model.cache.cached ? `cached · ${formatBytes(model.cache.size_bytes)}` : "not cached") : <span className="muted">none</span>}</dd>
        <dt>Requests</dt>
        <dd>
          {formatNumber(stats.success)} ok · <span className={stats.failure ? "bad" : undefined}>{formatNumber(stats.failure)} failed</span>
          {stats.avg_request_ms != null && ` · avg ${formatMs(stats.avg_request_ms)}`}
          {model.runtime.in_flight > 0 && ` · ${model.runtime.in_flight} in flight`}
        </dd>
        {model.state === "READY" && (
          <>
            <dt>Loaded</dt>
            <dd>
              {formatAgo(model.runtime.loaded_at, Date.now() / 1000)}
              {model.runtime.load_duration_s != null && ` · took ${formatDuration(model.runtime.load_duration_s)}`}
            </dd>
          </>
        )}
        <dt>Idle TTL</dt>
        <dd>{formatTtl(model.runtime.ttl_s)}</dd>
        <dt>Lazy load</dt>
        <dd>{lazyLoad ? "on: loads on its first request" : "off: load it here"}</dd>
      </dl>

      {download && (downloading || download.state === "done") && (
        <div className="download">
          {downloading ? (
            <>
              <span>Downloading {download.repo_id}</span>
              <progress
                aria-label="Download progress"
                max={100}
                value={download.percent ?? undefined}
                aria-valuemin={0}
                aria-valuemax={100}
                aria-valuenow={download.percent != null ? Math.round(download.percent) : undefined}
              />
              <span className="muted">{downloadText(download)}</span>
            </>
          ) : (
            <span className="muted">Downloaded {download.repo_id} · {formatBytes(download.bytes_done)}</span>
          )}
        </div>
      )}
      {download?.state === "failed" && !error && (
        <p className="error" role="alert">
          Download failed: {reasonText(download.error) ?? "no reason given"}
        </p>
      )}

      <form className="load-form" onSubmit={load} noValidate>
        <div className="field">
          <label htmlFor={`${id}-gpu`}>GPU</label>
          <select id={`${id}-gpu`} value={gpu} onChange={(event) => setGpu(event.target.value)} disabled={!gpuOptions.length || working}>
            {gpuOptions.length ? (
              <>
                <option value="">Default placement</option>
                {gpuOptions.map((option) => (
                  <option key={option.value} value={option.value}>
                    {option.text}
                  </option>
                ))}
              </>
            ) : (
              <option value="">no GPU</option>
            )}
          </select>
        </div>
        <div className="field">
          <label htmlFor={`${id}-instances`}>Instances</label>
          <input
            id={`${id}-instances`}
            type="number"
            inputMode="numeric"
            min={1}
            max={16}
            step={1}
            placeholder="default"
            value={instances}
            onChange={(event) => setInstances(event.target.value)}
            aria-invalid={parsed.error ? true : undefined}
            disabled={working}
            className="instances"
          />
        </div>
        <div className="row actions">
          <button type="submit" disabled={working}>
            Load
          </button>
          {hasHubSource(model.source) && (
            <button type="button" className="secondary" onClick={startDownload} disabled={working || downloading}>
              Download
            </button>
          )}
          <button type="button" className="secondary danger-outline" onClick={() => setConfirming(true)} disabled={working || state !== "READY"}>
            Unload
          </button>
        </div>
      </form>

      <div role="status" className="muted action-status">
        {busy ? ACTION_WORDS[busy] : notice}
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {confirming && (
        <ConfirmDialog
          question={`Unload ${modelKey}?`}
          detail={lazyLoad ? "Its next request loads it again (lazy loading is on)." : "Requests to it fail until it is loaded again."}
          confirmLabel="Unload"
          onConfirm={unload}
          onCancel={() => setConfirming(false)}
        />
      )}
    </article>
  );
}
