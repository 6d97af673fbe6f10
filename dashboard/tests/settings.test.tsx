import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { admin, type Status } from "../src/api/client";
import { keys } from "../src/lib/session";
import { Settings } from "../src/pages/Settings";
import { factRows, packageRows } from "../src/pages/settings/dependencies";

const answer = (data: unknown, status = 200) => ({
  data: status < 400 ? data : undefined,
  error: status < 400 ? undefined : data,
  response: new Response(null, { status }),
});

const STATUS = {
  collected_at: 1,
  dependencies: {
    python: { executable: "/env/bin/python3", version: "3.11.2" },
    packages: {
      torch: { version: "2.13.0+cpu", importable: true, error: null },
      vllm: { version: null, importable: false, error: "ModuleNotFoundError: No module named 'vllm'" },
    },
    torch: { version: "2.13.0+cpu", cuda_available: false, cuda_runtime: null, device_count: 0 },
  },
  settings: { profile: "cpu", lazy_load_models: true, preload_models: ["qwen"], default_model_ttl_s: -1, model_cache_dir: "/cache" },
} as unknown as Status;

const SECRET = "hf_abcdefghijklmnopqrstuvwxyz0123";

function mockAdmin(token = { configured: false, masked: null as string | null }, statusCode = 200) {
  const get = vi.spyOn(admin, "GET").mockImplementation(((path: string) =>
    Promise.resolve(
      statusCode !== 200
        ? answer({ error: { message: "The admin API needs the admin key (Authorization: Bearer ADMIN_KEY).", type: "x" } }, statusCode)
        : path === "/api/admin/huggingface/token"
          ? answer(token)
          : answer(STATUS),
    )) as never);
  const put = vi.spyOn(admin, "PUT").mockResolvedValue(answer({ configured: true, masked: "hf_…0123" }) as never);
  const del = vi.spyOn(admin, "DELETE").mockResolvedValue(answer({ configured: false, deleted: true }) as never);
  return { get, put, del };
}

afterEach(() => {
  vi.restoreAllMocks();
  sessionStorage.clear();
});

describe("Settings", () => {
  it("saves the Hugging Face token without ever rendering it", async () => {
    const { put } = mockAdmin();
    render(<Settings />);
    const section = screen.getByRole("region", { name: "Hugging Face token" });
    expect(await within(section).findByText("Not configured")).toBeTruthy();

    const input = within(section).getByLabelText("Hugging Face token") as HTMLInputElement;
    expect(input.type).toBe("password");
    fireEvent.change(input, { target: { value: SECRET } });
    fireEvent.click(within(section).getByRole("button", { name: "Save token" }));

    expect(put).toHaveBeenCalledWith("/api/admin/huggingface/token", { body: { token: SECRET } });
    expect(await within(section).findByText("Configured: hf_…0123")).toBeTruthy();
    expect(input.value).toBe("");
    expect(document.body.innerHTML).not.toContain(SECRET);
    expect(document.body.innerHTML).not.toContain("abcdefghijklmnop");
  });

  it("shows the masked token and deletes it", async () => {
    const { del } = mockAdmin({ configured: true, masked: "hf_…wxyz" });
    render(<Settings />);
    const section = screen.getByRole("region", { name: "Hugging Face token" });
    expect(await within(section).findByText("Configured: hf_…wxyz")).toBeTruthy();
    fireEvent.click(within(section).getByRole("button", { name: "Delete token" }));
    expect(await within(section).findByText("Not configured")).toBeTruthy();
    expect(del).toHaveBeenCalledWith("/api/admin/huggingface/token");
  });

  it("keeps the admin and API keys in session storage only", async () => {
    mockAdmin();
    render(<Settings />);
    expect(screen.getByText(/session storage/)).toBeTruthy();
    const adminInput = screen.getByLabelText("Admin key") as HTMLInputElement;
    expect(adminInput.type).toBe("password");
    fireEvent.change(adminInput, { target: { value: "admin-secret-1" } });
    fireEvent.click(screen.getByRole("button", { name: "Use admin key" }));
    expect(keys.admin()).toBe("admin-secret-1");
    expect(sessionStorage.getItem("passerelle.adminKey")).toBe("admin-secret-1");
    expect(localStorage.length).toBe(0);
    expect(adminInput.value).toBe("");
    expect(document.body.innerHTML).not.toContain("admin-secret-1");
    expect(screen.getByText("Admin key: set for this tab.")).toBeTruthy();

    fireEvent.click(screen.getByRole("button", { name: "Forget admin key" }));
    expect(keys.admin()).toBe("");

    fireEvent.change(screen.getByLabelText("API key"), { target: { value: "sk-api-2" } });
    fireEvent.click(screen.getByRole("button", { name: "Use API key" }));
    expect(keys.api()).toBe("sk-api-2");
    fireEvent.click(screen.getByRole("button", { name: "Forget API key" }));
    expect(keys.api()).toBe("");
    await waitFor(() => expect(screen.getByText("2.13.0+cpu", { selector: "td" })).toBeTruthy());
  });

  it("renders the dependency report and the settings", async () => {
    mockAdmin();
    render(<Settings />);
    const section = screen.getByRole("region", { name: "Dependencies" });
    const table = await within(section).findByRole("table");
    const rows = within(table).getAllByRole("row");
    expect(rows.map((row) => row.textContent)).toEqual([
      "NameVersionImport",
      "torch2.13.0+cpuok",
      "vllmnot installedfails: ModuleNotFoundError: No module named 'vllm'",
    ]);
    expect(within(section).getByText("3.11.2")).toBeTruthy();
    expect(within(section).getByText("CUDA available")).toBeTruthy();
    expect(within(section).getByText("never unloaded")).toBeTruthy();
  });

  it("points to Settings → Access on a 401, instead of a blank page", async () => {
    mockAdmin(undefined, 401);
    render(<Settings />);
    const alerts = await screen.findAllByRole("alert");
    expect(alerts[0].textContent).toContain("The admin key is missing or wrong.");
    expect(within(alerts[0]).getByRole("link", { name: "Settings → Access" }).getAttribute("href")).toBe("#/settings/access");
  });
});

describe("dependency shaping", () => {
  it("turns facts into rows in words", () => {
    expect(factRows({ cuda_available: true, device_count: 2, cuda_runtime: null })).toEqual([
      ["CUDA available", "yes"],
      ["Device count", "2"],
      ["CUDA runtime", "—"],
    ]);
    expect(factRows(null)).toEqual([["State", "not reported yet"]]);
    expect(factRows({ error: "torch could not be imported" })).toEqual([["Error", "torch could not be imported"]]);
  });

  it("reads packages in either shape", () => {
    expect(packageRows({ numpy: "1.26.4" })).toEqual([{ name: "numpy", version: "1.26.4", importable: null, importText: "—" }]);
    expect(packageRows({ nemo_toolkit: { version: "3.0.0", importable: null, error: null } })[0].importText).toBe("checking…");
    expect(packageRows(undefined)).toEqual([]);
  });
});
