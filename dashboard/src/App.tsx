import { useEffect, useState } from "react";
import { PAGES, type Page, useHashRoute } from "./lib/useHashRoute";
import { applyTheme, storedTheme, type Theme } from "./lib/theme";
import { Overview } from "./pages/Overview";
import { Models } from "./pages/Models";
import { Playground } from "./pages/Playground";
import { Settings } from "./pages/Settings";

const TITLES: Record<Page, string> = { overview: "Overview", models: "Models", playground: "Playground", settings: "Settings" };

export function App() {
  const page = useHashRoute();
  const [theme, setTheme] = useState<Theme>(storedTheme);
  useEffect(() => applyTheme(theme), [theme]);
  useEffect(() => {
    document.title = `${TITLES[page]} · passerelle`;
  }, [page]);

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">passerelle</span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map((name) => (
              <li key={name}>
                <a href={`#/${name}`} aria-current={name === page ? "page" : undefined}>
                  {TITLES[name]}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <label className="theme">
          Theme
          <select value={theme} onChange={(event) => setTheme(event.target.value as Theme)}>
            <option value="system">System</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
        </label>
      </header>
      <main id="main" tabIndex={-1}>
        <h1>{TITLES[page]}</h1>
        {page === "overview" && <Overview />}
        {page === "models" && <Models />}
        {page === "playground" && <Playground />}
        {page === "settings" && <Settings />}
      </main>
    </>
  );
}
