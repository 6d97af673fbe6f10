import { applyChunk, parseSampling, requestMessages, statsLine, streamStats, type StreamState } from "../src/pages/playground/chat";

describe("requestMessages", () => {
  it("sends images as image_url parts after the text, and skips failed answers", () => {
    const messages = requestMessages(
      [
        { id: "1", role: "user", text: "What is this?", images: [{ id: "i", name: "a.png", url: "data:image/png;base64,AAAA" }] },
        { id: "2", role: "assistant", text: "A cat.", state: "done" },
        { id: "3", role: "user", text: "Sure?" },
        { id: "4", role: "assistant", text: "", state: "error" },
        { id: "5", role: "user", text: "", images: [{ id: "j", name: "b.jpg", url: "data:image/jpeg;base64,BBBB" }] },
      ],
      " Be brief. ",
    );
    expect(messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: [{ type: "text", text: "What is this?" }, { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
      { role: "assistant", content: "A cat." },
      { role: "user", content: "Sure?" },
      { role: "user", content: [{ type: "image_url", image_url: { url: "data:image/jpeg;base64,BBBB" } }] },
    ]);
  });
});

describe("parseSampling", () => {
  it("reads the fields and sends ignore_eos only when checked", () => {
    expect(parseSampling({ maxTokens: "512", temperature: "0.7", topP: "0.8", ignoreEos: false })).toEqual({ max_tokens: 512, temperature: 0.7, top_p: 0.8 });
    expect(parseSampling({ maxTokens: "3000", temperature: "0", topP: "1", ignoreEos: true })).toEqual({ max_tokens: 3000, temperature: 0, top_p: 1, ignore_eos: true });
  });

  it("refuses values out of range", () => {
    expect(parseSampling({ maxTokens: "0", temperature: "1", topP: "1", ignoreEos: false })).toMatch(/Max tokens/);
    expect(parseSampling({ maxTokens: "8193", temperature: "1", topP: "1", ignoreEos: false })).toMatch(/Max tokens/);
    expect(parseSampling({ maxTokens: "1.5", temperature: "1", topP: "1", ignoreEos: false })).toMatch(/Max tokens/);
    expect(parseSampling({ maxTokens: "10", temperature: "2.5", topP: "1", ignoreEos: false })).toMatch(/Temperature/);
    expect(parseSampling({ maxTokens: "10", temperature: "", topP: "1", ignoreEos: false })).toMatch(/Temperature/);
    expect(parseSampling({ maxTokens: "10", temperature: "1", topP: "0", ignoreEos: false })).toMatch(/Top p/);
  });
});

describe("stream bookkeeping", () => {
  it("accumulates text, the finish reason and the usage chunk", () => {
    let state: StreamState = { text: "", finishReason: null, usage: null };
    state = applyChunk(state, { choices: [{ index: 0, delta: { content: "Hel" } }] });
    state = applyChunk(state, { choices: [{ index: 0, delta: { content: "lo" }, finish_reason: "stop" }] });
    state = applyChunk(state, { choices: [], usage: { prompt_tokens: 12, completion_tokens: 11 } });
    expect(state).toEqual({ text: "Hello", finishReason: "stop", usage: { prompt_tokens: 12, completion_tokens: 11 } });
    const stats = streamStats(state, 1000, 1250, 2250);
    expect(stats).toEqual({ finishReason: "stop", promptTokens: 12, completionTokens: 11, ttft: 0.25, elapsed: 1.25, tokensPerSecond: 10 });
    expect(statsLine(stats)).toBe("finished (stop) · 11 tokens · prompt 12 tokens · 10.0 tokens/s · first token 0.25 s · total 1.25 s");
  });

  it("says stopped, without tokens it does not know", () => {
    const stats = streamStats({ text: "abc", finishReason: null, usage: null }, 0, 100, 600);
    expect(statsLine(stats, true)).toBe("stopped · first token 0.10 s · total 0.60 s");
  });
});

describe("renderDelayMs", () => {
  it("redraws a short answer often and a long one at most once a second", async () => {
    const { renderDelayMs } = await import("../src/pages/playground/Chat");
    expect(renderDelayMs(0)).toBe(100);
    expect(renderDelayMs(2000)).toBe(200);
    expect(renderDelayMs(10_000)).toBe(600);
    expect(renderDelayMs(1_000_000)).toBe(1000);
  });
});
