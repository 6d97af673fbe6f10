import { diarizationCues, formatTimestamp, toSrt, toVtt, transcriptionCues } from "../src/pages/playground/subtitles";

describe("formatTimestamp", () => {
  it("formats SRT and VTT times", () => {
    expect(formatTimestamp(1.25, ",")).toBe("00:00:01,250");
    expect(formatTimestamp(1.25, ".")).toBe("00:00:01.250");
    expect(formatTimestamp(0, ",")).toBe("00:00:00,000");
  });

  it("rolls over minutes and hours", () => {
    expect(formatTimestamp(59.999, ",")).toBe("00:00:59,999");
    expect(formatTimestamp(61.5, ".")).toBe("00:01:01.500");
    expect(formatTimestamp(3599.9996, ",")).toBe("01:00:00,000");
    expect(formatTimestamp(3723.004, ".")).toBe("01:02:03.004");
    expect(formatTimestamp(36000 + 5, ",")).toBe("10:00:05,000");
  });

  it("rounds to the nearest millisecond, never shows 1000 ms", () => {
    expect(formatTimestamp(1.0004, ",")).toBe("00:00:01,000");
    expect(formatTimestamp(1.0006, ",")).toBe("00:00:01,001");
    expect(formatTimestamp(2.9996, ".")).toBe("00:00:03.000");
    expect(formatTimestamp(0.1 + 0.2, ".")).toBe("00:00:00.300");
  });

  it("clamps negative and non-finite times to zero", () => {
    expect(formatTimestamp(-1, ",")).toBe("00:00:00,000");
    expect(formatTimestamp(Number.NaN, ".")).toBe("00:00:00.000");
  });
});

const segments = [
  { start: 0, end: 1.25, text: "Hello there.", speaker: "SPEAKER_00" },
  { start: 1.25, end: 3600.5, text: "General Kenobi!", speaker: "SPEAKER_01" },
];

describe("toSrt", () => {
  it("numbers cues from 1 with SRT times and speaker prefixes", () => {
    expect(toSrt(segments)).toBe(
      "1\n00:00:00,000 --> 00:00:01,250\n[SPEAKER_00] Hello there.\n\n2\n00:00:01,250 --> 01:00:00,500\n[SPEAKER_01] General Kenobi!\n",
    );
  });

  it("has no prefix without a speaker, skips empty cues and keeps numbering continuous", () => {
    expect(
      toSrt([
        { start: 2, end: 3, text: "second" },
        { start: 0.5, end: 1, text: "   " },
        { start: 0, end: 1, text: "first" },
      ]),
    ).toBe("1\n00:00:00,000 --> 00:00:01,000\nfirst\n\n2\n00:00:02,000 --> 00:00:03,000\nsecond\n");
  });

  it("removes blank lines inside a cue's text", () => {
    expect(toSrt([{ start: 0, end: 1, text: "a\n\nb" }])).toBe("1\n00:00:00,000 --> 00:00:01,000\na\nb\n");
  });

  it("is empty without cues", () => {
    expect(toSrt([])).toBe("");
  });
});

describe("toVtt", () => {
  it("starts with the WEBVTT header and uses dots", () => {
    expect(toVtt(segments)).toBe(
      "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\n[SPEAKER_00] Hello there.\n\n00:00:01.250 --> 01:00:00.500\n[SPEAKER_01] General Kenobi!\n",
    );
  });

  it("escapes markup characters", () => {
    expect(toVtt([{ start: 0, end: 1, text: "a < b & c" }])).toBe("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\na &lt; b &amp; c\n");
  });

  it("is just the header without cues", () => {
    expect(toVtt([])).toBe("WEBVTT\n");
  });
});

describe("cues from results", () => {
  it("uses a transcription's segments, with speakers when known", () => {
    const cues = transcriptionCues({ text: "x", duration: 4, segments: [{ start: 0, end: 1, text: "Hi", speaker: "SPEAKER_00" }, { start: 1, end: 2, text: "Yo" }] });
    expect(toSrt(cues)).toBe("1\n00:00:00,000 --> 00:00:01,000\n[SPEAKER_00] Hi\n\n2\n00:00:01,000 --> 00:00:02,000\nYo\n");
  });

  it("falls back to one cue of the whole text without segments", () => {
    expect(transcriptionCues({ text: "All of it", duration: 2.5, segments: null })).toEqual([{ start: 0, end: 2.5, text: "All of it" }]);
    expect(transcriptionCues({ text: "  ", duration: 2.5, segments: [] })).toEqual([]);
  });

  it("names the speaker in each diarization cue", () => {
    const cues = diarizationCues({ segments: [{ speaker: "SPEAKER_01", start: 1.2, end: 3.4 }] });
    expect(toSrt(cues)).toBe("1\n00:00:01,200 --> 00:00:03,400\nSPEAKER_01\n");
    expect(toVtt(cues)).toBe("WEBVTT\n\n00:00:01.200 --> 00:00:03.400\nSPEAKER_01\n");
  });
});
