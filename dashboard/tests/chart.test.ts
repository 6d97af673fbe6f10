import { createElement } from "react";
import { act, render, screen } from "@testing-library/react";
import type uPlot from "uplot";

// uPlot draws on a canvas, which jsdom lacks: a fake records what the wrapper asks of it.
const created: FakePlot[] = [];
class FakePlot {
  width: number;
  data: uPlot.AlignedData;
  setData = vi.fn((data: uPlot.AlignedData) => {
    this.data = data;
  });
  setSize = vi.fn((size: { width: number }) => {
    this.width = size.width;
  });
  destroy = vi.fn();
  constructor(
    readonly options: uPlot.Options,
    data: uPlot.AlignedData,
    readonly target: HTMLElement,
  ) {
    this.width = options.width;
    this.data = data;
    created.push(this);
  }
}
vi.mock("uplot", () => ({ default: FakePlot }));

const { Chart, chartOptions, hasIsolated, readTheme, timeLabels, valueAt, yRange } = await import("../src/components/Chart");

let resize: ((entries: { contentRect: { width: number } }[]) => void) | null = null;
beforeEach(() => {
  created.length = 0;
  resize = null;
  vi.stubGlobal(
    "ResizeObserver",
    class {
      constructor(callback: typeof resize) {
        resize = callback;
      }
      observe() {}
      disconnect() {}
    },
  );
  vi.stubGlobal("requestAnimationFrame", (callback: () => void) => {
    callback();
    return 1;
  });
  document.documentElement.style.setProperty("--chart-1", "#111111");
  document.documentElement.style.setProperty("--chart-2", "#222222");
  document.documentElement.style.setProperty("--text", "#333333");
});
afterEach(() => vi.unstubAllGlobals());

const percent = (value: number | null | undefined) => (value == null ? "—" : `${value}%`);

describe("chart helpers", () => {
  it("reads the series colors from the CSS variables, in palette order", () => {
    const theme = readTheme([{ label: "a" }, { label: "b" }, { label: "c", color: "--chart-1" }]);
    expect(theme.colors).toEqual(["#111111", "#222222", "#111111"]);
    expect(theme.text).toBe("#333333");
  });

  it("starts the y axis at 0 and keeps fixed bounds", () => {
    expect(yRange(undefined, 2, 10)).toEqual([0, 10.8]);
    expect(yRange(undefined, 0, 0)).toEqual([0, 1]);
    expect(yRange(undefined, -5, 5)[0]).toBe(-5);
    expect(yRange(undefined, -5, 5)[1]).toBeCloseTo(5.8);
    expect(yRange([0, 100], 3, 20)).toEqual([0, 100]);
    expect(yRange([0, null], 3, 20)[1]).toBeCloseTo(21.6);
  });

  it("labels time ticks with seconds only when they are under a minute apart", () => {
    const t = new Date(2026, 0, 2, 14, 5, 9).getTime() / 1000;
    expect(timeLabels([t], 30)).toEqual(["14:05:09"]);
    expect(timeLabels([t], 300)).toEqual(["14:05"]);
  });

  it("finds the value at the cursor, or the last one", () => {
    const data: uPlot.AlignedData = [
      [1, 2, 3],
      [5, 6, null],
    ];
    expect(valueAt(data, 1, null)).toBe(6);
    expect(valueAt(data, 1, 0)).toBe(5);
    expect(valueAt(data, 2, null)).toBeNull();
  });

  it("marks isolated values, which a line cannot show", () => {
    expect(hasIsolated([null, 3, null, 4, 5])).toBe(true);
    expect(hasIsolated([1, 2, null, 4, 5])).toBe(false);
    expect(hasIsolated([7])).toBe(true);
  });

  it("builds options: one series per input, formatted y values", () => {
    const options = chartOptions({
      width: 300,
      height: 120,
      series: [{ label: "p50" }, { label: "p95" }],
      theme: { text: "#000", muted: "#555", grid: "#ccc", colors: ["#f00", "#0f0"] },
      format: () => percent,
      range: () => undefined,
    });
    expect(options.series.map((series) => series.label)).toEqual([undefined, "p50", "p95"]);
    expect(options.series[2].stroke).toBe("#0f0");
    const values = options.axes?.[1].values as (self: unknown, splits: number[]) => string[];
    expect(values(null, [0, 50])).toEqual(["0%", "50%"]);
    expect(options.axes?.[0].stroke).toBe("#000");
  });
});

describe("Chart", () => {
  const props = (data: uPlot.AlignedData) => ({ title: "Utilization", data, series: [{ label: "utilization" }], format: percent });

  it("creates uPlot once, then updates it in place with setData", () => {
    const first: uPlot.AlignedData = [[1, 2], [10, 20]];
    const view = render(createElement(Chart, props(first)));
    expect(created).toHaveLength(1);
    expect(screen.getByText("Utilization")).toBeTruthy();
    expect(screen.getByText("20%")).toBeTruthy(); // the latest value in the legend

    const second: uPlot.AlignedData = [[1, 2, 3], [10, 20, 30]];
    view.rerender(createElement(Chart, props(second)));
    expect(created).toHaveLength(1);
    expect(created[0].setData).toHaveBeenCalledWith(second);
    expect(screen.getByText("30%")).toBeTruthy();
  });

  it("follows its container's width", () => {
    render(createElement(Chart, props([[1], [1]])));
    act(() => resize?.([{ contentRect: { width: 512 } }]));
    expect(created[0].setSize).toHaveBeenCalledWith({ width: 512, height: 160 });
  });

  it("recreates the plot when the series change, and destroys it on unmount", () => {
    const view = render(createElement(Chart, props([[1], [1]])));
    view.rerender(createElement(Chart, { ...props([[1], [1], [2]]), series: [{ label: "a" }, { label: "b" }] }));
    expect(created).toHaveLength(2);
    expect(created[0].destroy).toHaveBeenCalled();
    view.unmount();
    expect(created[1].destroy).toHaveBeenCalled();
  });
});

describe("time range", () => {
  it("spans the data, or the minute up to a lone sample", async () => {
    const { xRange } = await import("../src/components/Chart");
    expect(xRange(100, 400)).toEqual([100, 400]);
    expect(xRange(400, 400)).toEqual([340, 400]);
    const [low, high] = xRange(null, null);
    expect(high - low).toBe(60);
  });
});
