import { axisTicks, barLabel, formatClock, layoutTimeline, mergeTurns, speakerColor, speakerOrder } from "../src/pages/playground/timeline";

describe("mergeTurns", () => {
  it("sorts and joins overlapping or touching turns", () => {
    expect(
      mergeTurns([
        { start: 5, end: 6 },
        { start: 0, end: 2 },
        { start: 1.5, end: 3 },
        { start: 3, end: 4 },
      ]),
    ).toEqual([
      { start: 0, end: 4 },
      { start: 5, end: 6 },
    ]);
  });

  it("keeps a turn inside another one merged, and joins gaps below the tolerance", () => {
    expect(mergeTurns([{ start: 0, end: 10 }, { start: 2, end: 3 }])).toEqual([{ start: 0, end: 10 }]);
    expect(mergeTurns([{ start: 0, end: 1 }, { start: 1.2, end: 2 }], 0.25)).toEqual([{ start: 0, end: 2 }]);
    expect(mergeTurns([{ start: 0, end: 1 }, { start: 1.2, end: 2 }])).toHaveLength(2);
  });

  it("drops empty or invalid turns", () => {
    expect(mergeTurns([{ start: 1, end: 1 }, { start: 3, end: 2 }, { start: Number.NaN, end: 2 }])).toEqual([]);
  });
});

describe("layoutTimeline", () => {
  const turns = [
    { speaker: "SPEAKER_01", start: 2, end: 4 },
    { speaker: "SPEAKER_00", start: 0, end: 1 },
    { speaker: "SPEAKER_00", start: 0.5, end: 2 },
    { speaker: "SPEAKER_00", start: 6, end: 10 },
  ];

  it("makes one row per speaker in natural order, with percentages of the duration", () => {
    const layout = layoutTimeline(turns, 10);
    expect(layout.duration).toBe(10);
    expect(layout.rows.map((row) => row.speaker)).toEqual(["SPEAKER_00", "SPEAKER_01"]);
    expect(layout.rows[0].bars.map(({ left, width, start, end }) => ({ left, width, start, end }))).toEqual([
      { left: 0, width: 20, start: 0, end: 2 },
      { left: 60, width: 40, start: 6, end: 10 },
    ]);
    expect(layout.rows[1].bars.map(({ left, width }) => ({ left, width }))).toEqual([{ left: 20, width: 20 }]);
    expect(layout.rows[0].total).toBe(6);
    expect(layout.rows[1].total).toBe(2);
  });

  it("gives each speaker its colour, and unique bar ids", () => {
    const layout = layoutTimeline(turns, 10);
    expect(layout.rows.map((row) => row.color)).toEqual(["var(--chart-1)", "var(--chart-2)"]);
    const ids = layout.rows.flatMap((row) => row.bars.map((bar) => bar.id));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("stretches to the last turn when it ends after the stated duration", () => {
    const layout = layoutTimeline([{ speaker: "A", start: 5, end: 20 }], 10);
    expect(layout.duration).toBe(20);
    expect(layout.rows[0].bars[0]).toMatchObject({ left: 25, width: 75 });
  });

  it("keeps very short turns visible and inside the track", () => {
    const layout = layoutTimeline([{ speaker: "A", start: 99.99, end: 100 }], 100, { minWidth: 0.5 });
    expect(layout.rows[0].bars[0]).toMatchObject({ width: 0.5, left: 99.5 });
  });

  it("sorts speakers numerically", () => {
    expect(speakerOrder([{ speaker: "S10", start: 0, end: 1 }, { speaker: "S2", start: 0, end: 1 }, { speaker: "S1", start: 0, end: 1 }])).toEqual(["S1", "S2", "S10"]);
  });

  it("is empty without turns", () => {
    expect(layoutTimeline([], 5)).toEqual({ duration: 5, rows: [] });
  });
});

describe("speakerColor", () => {
  it("uses the theme's chart colours, then the page's, then distinct hues", () => {
    expect([0, 1, 2, 3].map(speakerColor)).toEqual(["var(--chart-1)", "var(--chart-2)", "var(--chart-3)", "var(--chart-4)"]);
    expect(speakerColor(4)).toBe("var(--pg-chart-5)");
    expect(speakerColor(7)).toBe("var(--pg-chart-8)");
    expect(speakerColor(8)).toMatch(/^hsl\(/);
    expect(speakerColor(9)).not.toBe(speakerColor(8));
  });
});

describe("axisTicks and labels", () => {
  it("chooses a round step with at most max+1 ticks", () => {
    expect(axisTicks(10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(axisTicks(13)).toEqual([0, 5, 10]);
    expect(axisTicks(3700)).toEqual([0, 900, 1800, 2700, 3600]);
    expect(axisTicks(0.5)).toEqual([0, 0.1, 0.2, 0.3, 0.4, 0.5]);
    expect(axisTicks(0)).toEqual([0]);
  });

  it("formats clock times", () => {
    expect(formatClock(5)).toBe("0:05");
    expect(formatClock(65.4)).toBe("1:05");
    expect(formatClock(3723)).toBe("1:02:03");
    expect(formatClock(1.25, 1)).toBe("0:01.3");
    expect(formatClock(59.96, 1)).toBe("1:00.0");
  });

  it("names a bar by speaker and times", () => {
    expect(barLabel({ speaker: "SPEAKER_00", start: 1.2, end: 3.4 })).toBe("SPEAKER_00, 1.20 s to 3.40 s");
  });
});
