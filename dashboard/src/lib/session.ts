// Keys the operator enters once per browser session: kept in sessionStorage only, never in the URL
// or a cookie, and gone when the tab closes.
const ADMIN = "passerelle.adminKey";
const API = "passerelle.apiKey";

type Listener = () => void;
const listeners = new Set<Listener>();

function read(name: string): string {
  try {
    return sessionStorage.getItem(name) ?? "";
  } catch {
    return "";
  }
}

function write(name: string, value: string): void {
  if (value) sessionStorage.setItem(name, value);
  else sessionStorage.removeItem(name);
  listeners.forEach((listener) => listener());
}

export const keys = {
  admin: () => read(ADMIN),
  api: () => read(API),
  setAdmin: (value: string) => write(ADMIN, value.trim()),
  setApi: (value: string) => write(API, value.trim()),
  subscribe(listener: Listener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};
