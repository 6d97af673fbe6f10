import { render, screen, within } from "@testing-library/react";
import { admin, type Status } from "../src/api/client";

// uPlot needs a canvas: the page test swaps the chart for its title.
vi.mock("../src/components/Chart", () => ({ Chart: ({ title }: { title: string }) => <figure>{title}</figure> }));
const { Overview } = await import("../src/pages/Overview");

const answer = (data: unknown, status = 200) => ({
  data: status < 400 ? data : undefined,
  error: status < 400 ? undefined : data,
  response: new Response(null, { status }),
});

const STATUS = {
  collected_at: 1000,
  triton: { live: true, ready: false, version: "2.51.0", grpc_url: "127.0.0.1:8001", http_url: "http://127.0.0.1:8000", metrics_url: "http://127.0.0.1:8002/metrics" },
  replicas: [
    { upstream: "llm", address: "10.0.0.1:8001", live: true, ready: true, models: { qwen: "READY" } },
    { upstream: "llm", address: "10.0.0.2:8001", live: false, ready: false, models: {} },
  ],
  models: {
    qwen: {
      state: "READY",
      backend: "vllm",
      statistics: { success: 9, failure: 0, avg_request_ms: 7.3, last_inference: null },
      runtime: { in_flight: 0 },
    },
  },
  gpus: { available: false, devices: [], note: "NVML Shared Library Not Found", dcgm: null },
  host: { adapter: { cpu_percent: 12, memory_used_bytes: 2 * 1024 ** 3, memory_total_bytes: 8 * 1024 ** 3, cpu_count: 2, load_average: [1, 1, 1] }, triton: null },
  settings: { profile: "cpu" },
} as unknown as Status;

const METRICS = {
  interval_s: 5,
  window_s: 900,
  points: [
    { t: 995, models: { qwen: { requests_per_s: 0.5, kv_cache_usage_perc: 0.1 } }, gpus: [] },
    { t: 1000, models: { qwen: { requests_per_s: 1, kv_cache_usage_perc: 0.2 } }, gpus: [] },
  ],
};

afterEach(() => vi.restoreAllMocks());

describe("Overview", () => {
  it("shows Triton, no GPU without error, the host and the models", async () => {
    vi.spyOn(admin, "GET").mockImplementation(((path: string) => Promise.resolve(answer(path === "/api/admin/status" ? STATUS : METRICS))) as never);
    render(<Overview />);
    expect(await screen.findByRole("heading", { level: 2, name: "Triton" })).toBeTruthy();
    expect(screen.getByText("✓ Live")).toBeTruthy();
    expect(screen.getByText("✗ Not ready")).toBeTruthy();
    const replicas = screen.getByRole("table", { name: "Triton replicas" });
    const [up, down] = within(replicas).getAllByRole("row").slice(1);
    expect(up.textContent).toBe("llm10.0.0.1:8001✓ Readyqwen");
    expect(down.textContent).toBe("llm10.0.0.2:8001✗ Downnone");
    const gpus = screen.getByRole("region", { name: "GPUs" });
    expect(within(gpus).getByText("no GPU")).toBeTruthy();
    expect(within(gpus).getByText("NVML Shared Library Not Found").className).toContain("muted");
    expect(screen.queryByRole("alert")).toBeNull();
    const host = screen.getByRole("region", { name: "Host" });
    expect(within(host).getByText("2 GiB of 8 GiB")).toBeTruthy();
    const models = screen.getByRole("region", { name: "Models" });
    expect(within(models).getByRole("row", { name: /qwen/ }).textContent).toContain("Ready");
    const charts = await within(models).findByRole("article", { name: "qwen" });
    expect(within(charts).getByText("Request rate")).toBeTruthy();
    expect(within(charts).getByText("KV cache usage")).toBeTruthy();
    expect(within(charts).queryByText("Time to first token")).toBeNull();
  });

  it("points to Settings → Access when the admin key is missing", async () => {
    vi.spyOn(admin, "GET").mockResolvedValue(answer({ error: { message: "The admin API needs the admin key.", type: "x" } }, 401) as never);
    render(<Overview />);
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("The admin key is missing or wrong.");
    expect(within(alert).getByRole("link", { name: "Settings → Access" })).toBeTruthy();
  });
});
