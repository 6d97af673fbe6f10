import { useEffect, useState } from "react";

export const PAGES = ["overview", "models", "playground", "settings"] as const;
export type Page = (typeof PAGES)[number];

function current(): Page {
  const name = window.location.hash.replace(/^#\/?/, "").split("/")[0];
  return (PAGES as readonly string[]).includes(name) ? (name as Page) : "overview";
}

/** The page named in the URL's hash (#/models): links, the back button and reloads all work. */
export function useHashRoute(): Page {
  const [page, setPage] = useState<Page>(current);
  useEffect(() => {
    const onChange = () => setPage(current());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return page;
}
