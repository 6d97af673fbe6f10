import { admin, must } from "../api/client";
import { usePoll } from "../lib/usePoll";
import { AdminProblem } from "./settings/AdminProblem";
import { ModelCard } from "./models/ModelCard";
import { formatTtl } from "./overview/format";
import "./admin.css";

export function Models() {
  const status = usePoll(() => must(admin.GET("/api/admin/status")), 2000);
  const data = status.data;
  if (!data) {
    return (
      <div className="admin-page">
        {status.error ? <AdminProblem error={status.error} /> : <p className="muted" role="status">Loading the models…</p>}
      </div>
    );
  }
  const entries = Object.entries(data.models);
  const ready = entries.filter(([, model]) => model.state === "READY").length;
  const devices = data.gpus.available ? data.gpus.devices : [];
  return (
    <div className="admin-page">
      <AdminProblem error={status.error} since={data.collected_at} />
      <p className="muted page-summary">
        {ready} of {entries.length} models ready · lazy loading {data.settings.lazy_load_models ? "on: a model loads on its first request" : "off"} ·
        default idle TTL: {formatTtl(data.settings.default_model_ttl_s)}
        {data.gpus.available ? ` · ${devices.length} GPU${devices.length === 1 ? "" : "s"}` : " · no GPU"}
      </p>
      <div className="grid model-grid">
        {entries.map(([key, model]) => (
          <ModelCard
            key={key}
            modelKey={key}
            model={model}
            gpus={devices}
            lazyLoad={data.settings.lazy_load_models}
            collectedAt={data.collected_at}
            onChanged={status.refresh}
          />
        ))}
      </div>
    </div>
  );
}
