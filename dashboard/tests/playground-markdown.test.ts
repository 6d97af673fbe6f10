import { renderMarkdown } from "../src/pages/playground/markdown";

describe("renderMarkdown", () => {
  it("renders markdown", () => {
    const html = renderMarkdown("# Title\n\n**bold** and `code`\n\n- a\n- b");
    expect(html).toContain("<h1>Title</h1>");
    expect(html).toContain("<strong>bold</strong>");
    expect(html).toContain("<code>code</code>");
    expect(html).toContain("<li>a</li>");
  });

  it("removes scripts and event handlers", () => {
    const html = renderMarkdown('Hi <script>alert(1)</script><b onclick="alert(2)">x</b> <img src=x onerror="alert(3)">');
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/onerror/i);
    expect(html).not.toMatch(/onclick/i);
    expect(html).not.toMatch(/alert/);
    expect(html).toContain("<b>x</b>");
  });

  it("drops javascript: links and images (no request leaves the page)", () => {
    const html = renderMarkdown("[click](javascript:alert(1)) ![pic](https://example.com/x.png) <iframe src=\"https://example.com\"></iframe>");
    expect(html).not.toMatch(/javascript:/i);
    expect(html).not.toMatch(/<img/i);
    expect(html).not.toMatch(/<iframe/i);
  });

  it("opens links in a new tab without an opener", () => {
    const html = renderMarkdown("[docs](https://example.com/docs)");
    expect(html).toContain('href="https://example.com/docs"');
    expect(html).toContain('target="_blank"');
    expect(html).toContain('rel="noopener noreferrer"');
  });
});
