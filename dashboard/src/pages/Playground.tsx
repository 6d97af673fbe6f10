// The Playground: try the models without writing code. Two tabs, Chat and Audio; both stay
// mounted while hidden, so a conversation or a result survives a switch.
import { type KeyboardEvent, useRef, useState } from "react";
import { Audio } from "./playground/Audio";
import { Chat } from "./playground/Chat";
import "./playground.css";

const TABS = [
  { id: "chat", label: "Chat" },
  { id: "audio", label: "Audio" },
] as const;
type Tab = (typeof TABS)[number]["id"];

export function Playground() {
  const [tab, setTab] = useState<Tab>("chat");
  const buttons = useRef<(HTMLButtonElement | null)[]>([]);

  function onKeyDown(event: KeyboardEvent<HTMLDivElement>) {
    const index = TABS.findIndex((item) => item.id === tab);
    let next = -1;
    if (event.key === "ArrowRight" || event.key === "ArrowDown") next = (index + 1) % TABS.length;
    else if (event.key === "ArrowLeft" || event.key === "ArrowUp") next = (index - 1 + TABS.length) % TABS.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = TABS.length - 1;
    if (next < 0) return;
    event.preventDefault();
    setTab(TABS[next].id);
    buttons.current[next]?.focus();
  }

  return (
    <div className="pg">
      <div className="pg-tabs" role="tablist" aria-label="Playground" onKeyDown={onKeyDown}>
        {TABS.map((item, index) => (
          <button
            key={item.id}
            ref={(element) => {
              buttons.current[index] = element;
            }}
            type="button"
            role="tab"
            id={`pg-tab-${item.id}`}
            aria-selected={tab === item.id}
            aria-controls={`pg-panel-${item.id}`}
            tabIndex={tab === item.id ? 0 : -1}
            className="pg-tab"
            onClick={() => setTab(item.id)}
          >
            {item.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id="pg-panel-chat" aria-labelledby="pg-tab-chat" hidden={tab !== "chat"} className="pg-panel">
        <Chat />
      </div>
      <div role="tabpanel" id="pg-panel-audio" aria-labelledby="pg-tab-audio" hidden={tab !== "audio"} className="pg-panel">
        <Audio />
      </div>
    </div>
  );
}
