import { useEffect, useRef, useState, useSyncExternalStore, type FormEvent } from "react";
import { admin, must, type Status, type TokenState } from "../api/client";
import { keys } from "../lib/session";
import { usePoll } from "../lib/usePoll";
import { AdminProblem } from "./settings/AdminProblem";
import { packageRows, factRows } from "./settings/dependencies";
import { formatTtl } from "./overview/format";
import "./admin.css";

export function Settings() {
  const access = useRef<HTMLElement>(null);
  useEffect(() => {
    // #/settings/access (the link of the admin-key notices) lands on the Access section.
    if (window.location.hash.startsWith("#/settings/access")) {
      access.current?.scrollIntoView?.({ block: "start" });
      access.current?.querySelector("input")?.focus();
    }
  }, []);
  const adminKey = useSyncExternalStore(keys.subscribe, keys.admin);
  return (
    <div className="admin-page settings">
      <section className="card" aria-labelledby="st-access" ref={access}>
        <h2 id="st-access">Access</h2>
        <p className="muted">Keys stay in this browser tab's session storage: never in a cookie or the URL, and gone when the tab closes.</p>
        <div className="key-forms">
          <KeyForm
            name="Admin key"
            use="Use admin key"
            forget="Forget admin key"
            read={keys.admin}
            save={keys.setAdmin}
            unset="No admin key: the admin API then answers this browser only on the adapter's own machine (loopback)."
          />
          <KeyForm
            name="API key"
            use="Use API key"
            forget="Forget API key"
            read={keys.api}
            save={keys.setApi}
            unset="No API key: the playground calls /v1 without one (fine when the adapter sets no API keys)."
          />
        </div>
      </section>
      {/* Remounted when the admin key changes, so both sections ask again with it. */}
      <TokenSection key={`token-${adminKey}`} />
      <DependenciesSection key={`deps-${adminKey}`} />
    </div>
  );
}

function KeyForm({ name, use, forget, read, save, unset }: { name: string; use: string; forget: string; read: () => string; save: (value: string) => void; unset: string }) {
  const current = useSyncExternalStore(keys.subscribe, read);
  const [value, setValue] = useState("");
  const [said, setSaid] = useState("");
  const id = `key-${name.replace(/\W+/g, "-").toLowerCase()}`;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (!value.trim()) return;
    save(value);
    setValue("");
    setSaid(`${name} saved for this tab.`);
  };
  return (
    <form className="key-form" onSubmit={submit}>
      <label htmlFor={id}>{name}</label>
      <div className="row">
        <input
          id={id}
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(event) => setValue(event.target.value)}
          placeholder={current ? "set (enter a new one to replace it)" : ""}
          aria-describedby={`${id}-state`}
        />
        <button type="submit" disabled={!value.trim()}>
          {use}
        </button>
        <button
          type="button"
          className="secondary"
          disabled={!current}
          onClick={() => {
            save("");
            setSaid(`${name} forgotten.`);
          }}
        >
          {forget}
        </button>
      </div>
      <p id={`${id}-state`} className={current ? "ok" : "muted"}>
        {current ? `${name}: set for this tab.` : unset}
      </p>
      <p role="status" className="muted sr-status">
        {said}
      </p>
    </form>
  );
}

function TokenSection() {
  const polled = usePoll(() => must(admin.GET("/api/admin/huggingface/token")), 30000);
  const [shown, setShown] = useState<TokenState>();
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [said, setSaid] = useState("");
  useEffect(() => {
    if (polled.data) setShown(polled.data);
  }, [polled.data]);

  async function act(call: () => Promise<TokenState>, message: (state: TokenState) => string) {
    setBusy(true);
    setError(null);
    setSaid("");
    try {
      const state = await call();
      setShown(state);
      setSaid(message(state));
    } catch (cause) {
      setError(cause instanceof Error ? cause.message : String(cause));
    } finally {
      setBusy(false);
    }
  }

  const save = (event: FormEvent) => {
    event.preventDefault();
    const token = value.trim();
    if (!token) return;
    setValue(""); // cleared at once: the token lives in this input only while it is typed
    void act(
      () => must(admin.PUT("/api/admin/huggingface/token", { body: { token } })),
      () => "Token saved.",
    );
  };
  const remove = () =>
    void act(
      async () => {
        const answer = await must(admin.DELETE("/api/admin/huggingface/token"));
        return { configured: answer.configured, masked: null };
      },
      () => "Token deleted.",
    );

  return (
    <section className="card" aria-labelledby="st-token">
      <h2 id="st-token">Hugging Face token</h2>
      <p className="muted">Used to download gated models into the model cache; Triton reads the same token.</p>
      {polled.error && !shown ? (
        <AdminProblem error={polled.error} />
      ) : (
        <p className="token-state">
          {!shown ? <span className="muted">Checking…</span> : shown.configured ? `Configured: ${shown.masked ?? "(hidden)"}` : "Not configured"}
        </p>
      )}
      <form className="key-form" onSubmit={save}>
        <label htmlFor="hf-token">Hugging Face token</label>
        <div className="row">
          <input id="hf-token" type="password" autoComplete="off" spellCheck={false} value={value} onChange={(event) => setValue(event.target.value)} />
          <button type="submit" disabled={busy || !value.trim()}>
            Save token
          </button>
          <button type="button" className="secondary" onClick={remove} disabled={busy || !shown?.configured}>
            Delete token
          </button>
        </div>
      </form>
      <p role="status" className="muted sr-status">
        {said}
      </p>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

function Facts({ rows }: { rows: [string, string][] }) {
  return (
    <dl className="facts">
      {rows.map(([name, value]) => (
        <div key={name} className="fact">
          <dt>{name}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function DependenciesSection() {
  const status = usePoll(() => must(admin.GET("/api/admin/status")), 10000);
  const data: Status | undefined = status.data;
  return (
    <section className="card" aria-labelledby="st-deps">
      <h2 id="st-deps">Dependencies</h2>
      {!data ? (
        status.error ? (
          <AdminProblem error={status.error} />
        ) : (
          <p className="muted">Loading…</p>
        )
      ) : (
        <>
          {status.error && <AdminProblem error={status.error} since={data.collected_at} />}
          <p className="muted">The Python environment Triton runs the models in, as its “system” model reports it.</p>
          {data.dependencies ? (
            <div className="deps">
              <div>
                <h3>Python</h3>
                <Facts rows={factRows(data.dependencies.python)} />
              </div>
              <div>
                <h3>torch</h3>
                <Facts rows={factRows(data.dependencies.torch)} />
              </div>
              <div className="deps-packages">
                <h3>Packages</h3>
                <div className="table-scroll">
                  <table>
                    <thead>
                      <tr>
                        <th scope="col">Name</th>
                        <th scope="col">Version</th>
                        <th scope="col">Import</th>
                      </tr>
                    </thead>
                    <tbody>
                      {packageRows(data.dependencies.packages).map((row) => (
                        <tr key={row.name}>
                          <th scope="row">{row.name}</th>
                          <td>{row.version ?? <span className="muted">not installed</span>}</td>
                          <td className={row.importable === false ? "bad" : undefined}>{row.importText}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              </div>
            </div>
          ) : (
            <p className="muted">Unavailable: the “system” model is not loaded, so Triton's environment cannot be asked.</p>
          )}
          <h3 className="settings-view">Adapter settings</h3>
          <Facts
            rows={[
              ["Profile", data.settings.profile],
              ["Lazy loading", data.settings.lazy_load_models ? "on: a model loads on its first request" : "off"],
              ["Preloaded models", data.settings.preload_models.join(", ") || "none"],
              ["Default idle TTL", formatTtl(data.settings.default_model_ttl_s)],
              ["Model cache", data.settings.model_cache_dir],
            ]}
          />
        </>
      )}
    </section>
  );
}
