// Assistant answers are markdown: rendered by marked, then sanitised by DOMPurify (no raw HTML
// reaches the page). Images are dropped: an answer must not make the browser fetch anything.
import DOMPurify from "dompurify";
import { Marked } from "marked";

const marked = new Marked({ gfm: true, breaks: true });

const FORBID_TAGS = ["img", "picture", "source", "video", "audio", "iframe", "object", "embed", "form", "input", "button", "style", "link", "meta", "base", "svg", "math"];

let hooked = false;
function addHooks(): void {
  if (hooked) return;
  hooked = true;
  // Links open in a new tab, without handing it this page.
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node instanceof Element && node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

/** Markdown to safe HTML: what `dangerouslySetInnerHTML` may take. */
export function renderMarkdown(text: string): string {
  addHooks();
  const html = marked.parse(text, { async: false }) as string;
  return DOMPurify.sanitize(html, { FORBID_TAGS, FORBID_ATTR: ["style", "srcset"], ALLOW_DATA_ATTR: false });
}
