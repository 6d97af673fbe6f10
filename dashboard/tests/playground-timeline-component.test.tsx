import { act, cleanup, fireEvent, render, screen, within } from "@testing-library/react";
import { useState } from "react";
import { useRangePlayer } from "../src/pages/playground/player";
import { SpeakerTimeline } from "../src/pages/playground/SpeakerTimeline";

const turns = [
  { speaker: "SPEAKER_00", start: 0.5, end: 1.2 },
  { speaker: "SPEAKER_01", start: 1.2, end: 3.4 },
  { speaker: "SPEAKER_00", start: 4, end: 6 },
];

function Harness() {
  const [audio, setAudio] = useState<HTMLAudioElement | null>(null);
  const player = useRangePlayer(audio);
  return (
    <>
      <audio ref={setAudio} aria-label="Audio" controls />
      <SpeakerTimeline turns={turns} duration={8} player={player} />
    </>
  );
}

let play: ReturnType<typeof vi.fn>;
let pause: ReturnType<typeof vi.fn>;
let paused = true;

beforeEach(() => {
  paused = true;
  play = vi.fn(function (this: HTMLMediaElement) {
    paused = false;
    this.dispatchEvent(new Event("play"));
    return Promise.resolve();
  });
  pause = vi.fn(function (this: HTMLMediaElement) {
    paused = true;
    this.dispatchEvent(new Event("pause"));
  });
  vi.spyOn(HTMLMediaElement.prototype, "play").mockImplementation(play as unknown as () => Promise<void>);
  vi.spyOn(HTMLMediaElement.prototype, "pause").mockImplementation(pause as unknown as () => void);
  vi.spyOn(HTMLMediaElement.prototype, "paused", "get").mockImplementation(() => paused);
});

afterEach(() => {
  cleanup();
  vi.restoreAllMocks();
});

describe("SpeakerTimeline", () => {
  it("has one labelled row per speaker, a legend and an axis", () => {
    render(<Harness />);
    const group = screen.getByRole("group", { name: "Speaker timeline" });
    expect(within(group).getAllByRole("button")).toHaveLength(3);
    expect(within(group).getAllByText(/^SPEAKER_0[01]$/)).toHaveLength(2);
    const legend = screen.getByRole("list", { name: "Speakers" });
    expect(within(legend).getAllByRole("listitem").map((item) => item.textContent)).toEqual(["SPEAKER_00 (2.7 s)", "SPEAKER_01 (2.2 s)"]);
    const bar = screen.getByRole("button", { name: "SPEAKER_01, 1.20 s to 3.40 s" });
    expect(bar.style.left).toBe("15%");
    expect(bar.style.width).toBe("27.5%");
    expect(bar.style.background).toContain("--chart-2");
  });

  it("plays a turn from its start when its bar is clicked, and pauses at its end", () => {
    render(<Harness />);
    const audio = screen.getByLabelText("Audio") as HTMLAudioElement;
    const bar = screen.getByRole("button", { name: "SPEAKER_01, 1.20 s to 3.40 s" });
    fireEvent.click(bar);
    expect(play).toHaveBeenCalledTimes(1);
    expect(audio.currentTime).toBe(1.2);
    expect(bar.getAttribute("aria-current")).toBe("true");
    expect(bar.className).toContain("pg-bar-active");

    act(() => {
      audio.currentTime = 2;
      audio.dispatchEvent(new Event("timeupdate"));
    });
    expect(pause).not.toHaveBeenCalled();

    act(() => {
      audio.currentTime = 3.45;
      audio.dispatchEvent(new Event("timeupdate"));
    });
    expect(pause).toHaveBeenCalledTimes(1);
    expect(bar.getAttribute("aria-current")).toBeNull();
  });

  it("plays from the keyboard (Enter on the focused bar)", () => {
    render(<Harness />);
    const audio = screen.getByLabelText("Audio") as HTMLAudioElement;
    const bar = screen.getByRole("button", { name: "SPEAKER_00, 4.00 s to 6.00 s" });
    bar.focus();
    expect(document.activeElement).toBe(bar);
    // A native <button> turns Enter and Space into a click; jsdom does not, so the click stands in for it.
    fireEvent.keyDown(bar, { key: "Enter" });
    fireEvent.click(bar);
    expect(play).toHaveBeenCalled();
    expect(audio.currentTime).toBe(4);
  });

  it("switches to another turn while one plays", () => {
    render(<Harness />);
    const audio = screen.getByLabelText("Audio") as HTMLAudioElement;
    fireEvent.click(screen.getByRole("button", { name: "SPEAKER_00, 0.50 s to 1.20 s" }));
    const second = screen.getByRole("button", { name: "SPEAKER_00, 4.00 s to 6.00 s" });
    fireEvent.click(second);
    expect(audio.currentTime).toBe(4);
    act(() => {
      audio.currentTime = 4.5;
      audio.dispatchEvent(new Event("timeupdate"));
    });
    // The first turn's end (1.2 s) no longer stops the audio.
    expect(pause).not.toHaveBeenCalled();
    expect(second.getAttribute("aria-current")).toBe("true");
  });
});
