// The dependency report of Triton's environment (Status.dependencies, typed `unknown` in the schema),
// shaped defensively for the Settings page.

export interface PackageRow {
  name: string;
  version: string | null;
  importable: boolean | null;
  importText: string;
}

const words = (key: string): string => {
  const text = key.replace(/_/g, " ");
  return text === "cuda available" ? "CUDA available" : text === "cuda runtime" ? "CUDA runtime" : text[0].toUpperCase() + text.slice(1);
};

function valueText(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number" || typeof value === "string") return String(value);
  if (Array.isArray(value)) return value.map(valueText).join(", ");
  return JSON.stringify(value);
}

/** An object's facts as [name in words, value in words] rows; a bare value as one row; nothing as none. */
export function factRows(value: unknown): [string, string][] {
  if (value === null || value === undefined) return [["State", "not reported yet"]];
  if (typeof value !== "object" || Array.isArray(value)) return [["Value", valueText(value)]];
  return Object.entries(value as Record<string, unknown>).map(([key, item]) => [words(key), valueText(item)]);
}

/** Packages ({name: {version, importable, error}} or {name: "1.2.3"}) as table rows, in the report's order. */
export function packageRows(value: unknown): PackageRow[] {
  if (!value || typeof value !== "object" || Array.isArray(value)) return [];
  return Object.entries(value as Record<string, unknown>)
    .map(([name, item]): PackageRow => {
      if (typeof item === "string" || item === null) return { name, version: item, importable: null, importText: "—" };
      const record = (item ?? {}) as Record<string, unknown>;
      const version = typeof record.version === "string" ? record.version : null;
      const importable = typeof record.importable === "boolean" ? record.importable : null;
      const error = typeof record.error === "string" && record.error ? record.error : null;
      const importText = importable === true ? "ok" : importable === false ? `fails${error ? `: ${error}` : ""}` : version ? "checking…" : error ?? "—";
      return { name, version, importable, importText };
    });
}
