import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { admin, type ModelState } from "../src/api/client";
import { ModelCard } from "../src/pages/models/ModelCard";
import { downloadText, hasHubSource, isProblem, loadBody, parseInstances, placementText, reasonText, stateWords } from "../src/pages/models/model";

const answer = (data: unknown, status = 200) => ({
  data: status < 400 ? data : undefined,
  error: status < 400 ? undefined : data,
  response: new Response(null, { status }),
});

function model(overrides: Partial<ModelState> = {}): ModelState {
  return {
    state: "READY",
    reason: null,
    version: "1",
    backend: "python",
    source: null,
    cache: null,
    download: null,
    last_error: null,
    statistics: { success: 25, failure: 1, avg_queue_ms: 0.1, avg_compute_ms: 26, avg_request_ms: 27.97, last_inference: null },
    placement: [{ count: 2, kind: "KIND_CPU" }],
    runtime: { endpoint: "x", loaded_at: null, load_duration_s: null, config_override: null, engine_args: null, in_flight: 0, ttl_s: 600 },
    vllm: null,
    ...overrides,
  };
}

function card(props: Partial<Parameters<typeof ModelCard>[0]> = {}) {
  const onChanged = vi.fn();
  render(<ModelCard modelKey="langid" model={model()} gpus={[]} lazyLoad={true} collectedAt={1} onChanged={onChanged} {...props} />);
  return { onChanged, article: screen.getByRole("article", { name: "langid" }) };
}

beforeAll(() => {
  // jsdom has no modal dialogs.
  HTMLDialogElement.prototype.showModal = function (this: HTMLDialogElement) {
    this.setAttribute("open", "");
  };
  HTMLDialogElement.prototype.close = function (this: HTMLDialogElement) {
    this.removeAttribute("open");
    this.dispatchEvent(new Event("close"));
  };
});
afterEach(() => vi.restoreAllMocks());

describe("model helpers", () => {
  it("puts states in words", () => {
    expect(stateWords("READY")).toBe("Ready");
    expect(stateWords("LOADING")).toBe("Loading…");
    expect(stateWords("UNAVAILABLE")).toBe("Unavailable");
    expect(stateWords("SOME_STATE")).toBe("Some state");
  });

  it("keeps the meaningful line of a traceback", () => {
    const triton = "load failed for model 'langid': version 1 is at UNAVAILABLE state: Internal: ModuleNotFoundError: No module named 'x'\n\nAt:\n  /models/langid/1/model.py(12): initialize\n";
    expect(reasonText(triton)).toBe("load failed for model 'langid': version 1 is at UNAVAILABLE state: Internal: ModuleNotFoundError: No module named 'x'");
    const python = 'Traceback (most recent call last):\n  File "/a.py", line 3, in <module>\n    f()\nValueError: bad weights\n';
    expect(reasonText(python)).toBe("ValueError: bad weights");
    expect(reasonText("unloaded by the idle TTL")).toBe("unloaded by the idle TTL");
    expect(reasonText("  ")).toBeNull();
    expect(isProblem("unloaded")).toBe(false);
    expect(isProblem("load failed: x")).toBe(true);
    expect(isProblem(null)).toBe(false);
    expect(reasonText("x".repeat(700))?.length).toBe(600);
  });

  it("describes placement, sources and downloads", () => {
    expect(placementText([{ count: 2, kind: "KIND_GPU", gpus: [0, 1] }])).toBe("2 × GPU 0, 1");
    expect(placementText([{ name: "qwen_0", count: 1, kind: "KIND_CPU" }])).toBe("1 × CPU");
    expect(placementText([])).toBe("default");
    expect(hasHubSource("Qwen/Qwen3-8B")).toBe(true);
    expect(hasHubSource("/models/local")).toBe(false);
    expect(hasHubSource(null)).toBe(false);
    expect(downloadText({ percent: 45, bytes_done: 1536 * 1024 ** 2, bytes_total: 3 * 1024 ** 3, files_done: 3, files_total: 10 })).toBe(
      "45% · 1.5 GiB of 3 GiB · 3 of 10 files",
    );
  });

  it("checks the load options", () => {
    expect(parseInstances("")).toEqual({});
    expect(parseInstances("4")).toEqual({ value: 4 });
    expect(parseInstances("0").error).toBeTruthy();
    expect(parseInstances("17").error).toBeTruthy();
    expect(parseInstances("1.5").error).toBeTruthy();
    expect(loadBody("", undefined)).toEqual({});
    expect(loadBody("1", 2)).toEqual({ gpus: [1], instances: 2 });
  });
});

describe("ModelCard", () => {
  it("shows the state as a badge and the reason without the stack trace", () => {
    const { article } = card({
      model: model({ state: "UNAVAILABLE", reason: "load failed: ImportError: no x\n\nAt:\n  /m.py(1): initialize" }),
    });
    const badge = within(article).getByText("Unavailable");
    expect(badge.getAttribute("data-state")).toBe("UNAVAILABLE");
    expect(within(article).getByText("load failed: ImportError: no x")).toBeTruthy();
    expect(article.textContent).not.toContain("initialize");
    expect(within(article).getByText("2 × CPU")).toBeTruthy();
    expect(within(article).getByText("unloaded after 10 min idle")).toBeTruthy();
  });

  it("disables the GPU choice without GPU, and offers Download only for hub sources", () => {
    const { article } = card();
    const select = within(article).getByLabelText("GPU") as HTMLSelectElement;
    expect(select.disabled).toBe(true);
    expect(within(select).getByText("no GPU")).toBeTruthy();
    expect(within(article).queryByRole("button", { name: "Download" })).toBeNull();
  });

  it("confirms an unload in a modal dialog", async () => {
    const post = vi.spyOn(admin, "POST").mockResolvedValue(answer({ model: "langid", state: "UNAVAILABLE" }) as never);
    const { article, onChanged } = card();
    fireEvent.click(within(article).getByRole("button", { name: "Unload" }));
    const dialog = screen.getByRole("dialog");
    expect(dialog.hasAttribute("open")).toBe(true);
    expect(within(dialog).getByText("Unload langid?")).toBeTruthy();

    fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(post).not.toHaveBeenCalled();

    fireEvent.click(within(article).getByRole("button", { name: "Unload" }));
    fireEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Unload" }));
    await waitFor(() => expect(onChanged).toHaveBeenCalled());
    expect(post).toHaveBeenCalledWith("/api/admin/models/{key}/unload", { params: { path: { key: "langid" } } });
  });

  it("loads with the chosen GPU and instances, showing Loading… meanwhile", async () => {
    let finish: (value: unknown) => void = () => {};
    const post = vi.spyOn(admin, "POST").mockReturnValue(new Promise((resolve) => (finish = resolve)) as never);
    const { article, onChanged } = card({
      model: model({ state: "UNAVAILABLE" }),
      gpus: [
        { index: 0, name: "H200", memory_total_bytes: 141 * 1024 ** 3 },
        { index: 1, name: "H200" },
      ],
    });
    fireEvent.change(within(article).getByLabelText("GPU"), { target: { value: "1" } });
    fireEvent.change(within(article).getByLabelText("Instances"), { target: { value: "2" } });
    fireEvent.click(within(article).getByRole("button", { name: "Load" }));

    expect(post).toHaveBeenCalledWith("/api/admin/models/{key}/load", { params: { path: { key: "langid" } }, body: { gpus: [1], instances: 2 } });
    expect(within(article).getAllByText("Loading…").length).toBeGreaterThan(0);
    expect(within(article).getByText("Loading…", { selector: ".badge" }).getAttribute("data-state")).toBe("LOADING");
    expect((within(article).getByRole("button", { name: "Load" }) as HTMLButtonElement).disabled).toBe(true);

    await act(async () => finish(answer({ model: "langid", state: "READY", load_duration_s: 3.2, instance_group: [{ count: 2, kind: "KIND_GPU", gpus: [1] }] })));
    expect(onChanged).toHaveBeenCalled();
    expect(within(article).getByText("Ready").getAttribute("data-state")).toBe("READY");
    expect(within(article).getByRole("status").textContent).toContain("Loaded in 3.2 s");
  });

  it("shows an action's error in words in an alert", async () => {
    vi.spyOn(admin, "POST").mockResolvedValue(
      answer({ error: { message: "GPU ids [3] do not exist; Triton sees 2 GPU(s).", type: "invalid_request_error", code: "invalid_gpu" } }, 400) as never,
    );
    const { article } = card({ model: model({ state: "UNAVAILABLE" }) });
    fireEvent.click(within(article).getByRole("button", { name: "Load" }));
    expect((await within(article).findByRole("alert")).textContent).toBe("GPU ids [3] do not exist; Triton sees 2 GPU(s).");
  });

  it("refuses instances out of range without calling the API", () => {
    const post = vi.spyOn(admin, "POST");
    const { article } = card();
    fireEvent.change(within(article).getByLabelText("Instances"), { target: { value: "40" } });
    fireEvent.click(within(article).getByRole("button", { name: "Load" }));
    expect(post).not.toHaveBeenCalled();
    expect(within(article).getByRole("alert").textContent).toContain("1 to 16");
  });

  it("shows a running download's progress", () => {
    const { article } = card({
      model: model({
        source: "Qwen/Qwen3-8B",
        download: {
          key: "langid",
          repo_id: "Qwen/Qwen3-8B",
          revision: null,
          state: "running",
          bytes_done: 1024 ** 3,
          bytes_total: 4 * 1024 ** 3,
          percent: 25,
          files_done: 1,
          files_total: 4,
          error: null,
          status_code: null,
          started_at: 1,
          finished_at: null,
          commit: null,
          path: null,
        },
      }),
    });
    const bar = within(article).getByRole("progressbar", { name: "Download progress" });
    expect(bar.getAttribute("aria-valuenow")).toBe("25");
    expect(bar.getAttribute("aria-valuemax")).toBe("100");
    expect(within(article).getByText("25% · 1 GiB of 4 GiB · 1 of 4 files")).toBeTruthy();
    expect((within(article).getByRole("button", { name: "Download" }) as HTMLButtonElement).disabled).toBe(true);
  });
});
