import { useEffect, useRef, useState } from "react";

export interface Polled<T> {
  data: T | undefined;
  error: Error | undefined;
  refresh: () => void;
}

/** Calls `load` now and every `intervalMs`; keeps the last good data while a refresh runs or fails,
 * so panels update in place without flicker. Pauses while the tab is hidden. */
export function usePoll<T>(load: () => Promise<T>, intervalMs: number): Polled<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<Error>();
  const [tick, setTick] = useState(0);
  const loader = useRef(load);
  loader.current = load;

  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      if (document.visibilityState !== "hidden") {
        try {
          const value = await loader.current();
          if (alive) {
            setData(value);
            setError(undefined);
          }
        } catch (cause) {
          if (alive) setError(cause instanceof Error ? cause : new Error(String(cause)));
        }
      }
      if (alive) timer = setTimeout(run, intervalMs);
    };
    void run();
    return () => {
      alive = false;
      if (timer) clearTimeout(timer);
    };
  }, [intervalMs, tick]);

  return { data, error, refresh: () => setTick((value) => value + 1) };
}
