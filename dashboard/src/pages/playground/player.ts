// Plays one range of an <audio> element: seek to its start, play, pause at its end.
import { useCallback, useEffect, useRef, useState } from "react";

export interface RangePlayer {
  /** Seeks to `start`, plays, and pauses at `end`; `id` names the range while it plays. */
  playRange(start: number, end: number, id: string): void;
  /** The id of the range playing now, or null. */
  activeId: string | null;
  /** The audio's position (seconds), updated while it plays. */
  currentTime: number;
  /** Whether the audio is playing (a range or not). */
  playing: boolean;
}

/** `element`: the <audio> (kept in state through a callback ref, so that the hook sees it mount). */
export function useRangePlayer(element: HTMLAudioElement | null): RangePlayer {
  const [activeId, setActiveId] = useState<string | null>(null);
  const [currentTime, setCurrentTime] = useState(0);
  const [playing, setPlaying] = useState(false);
  const stopAt = useRef<number | null>(null);
  const frame = useRef(0);

  const check = useCallback((element: HTMLAudioElement) => {
    setCurrentTime(element.currentTime);
    if (stopAt.current !== null && element.currentTime >= stopAt.current) {
      stopAt.current = null;
      element.pause();
      setActiveId(null);
    }
  }, []);

  useEffect(() => {
    if (!element) return;
    const loop = () => {
      check(element);
      if (!element.paused) frame.current = requestAnimationFrame(loop);
    };
    const onPlay = () => {
      setPlaying(true);
      cancelAnimationFrame(frame.current);
      frame.current = requestAnimationFrame(loop);
    };
    const onPause = () => {
      setPlaying(false);
      cancelAnimationFrame(frame.current);
      setCurrentTime(element.currentTime);
      // Paused by the person (or ended): the range is over.
      stopAt.current = null;
      setActiveId(null);
    };
    // timeupdate also runs where animation frames are throttled (a background tab).
    const onTime = () => check(element);
    const onSeeked = () => {
      setCurrentTime(element.currentTime);
    };
    element.addEventListener("play", onPlay);
    element.addEventListener("pause", onPause);
    element.addEventListener("ended", onPause);
    element.addEventListener("timeupdate", onTime);
    element.addEventListener("seeked", onSeeked);
    return () => {
      cancelAnimationFrame(frame.current);
      element.removeEventListener("play", onPlay);
      element.removeEventListener("pause", onPause);
      element.removeEventListener("ended", onPause);
      element.removeEventListener("timeupdate", onTime);
      element.removeEventListener("seeked", onSeeked);
    };
  }, [element, check]);

  const playRange = useCallback(
    (start: number, end: number, id: string) => {
      if (!element) return;
      stopAt.current = end;
      setActiveId(id);
      element.currentTime = start;
      setCurrentTime(start);
      const played = element.play();
      // play() rejects when the browser refuses (no source yet, autoplay rules): the range is not playing.
      if (played && typeof played.catch === "function")
        played.catch(() => {
          stopAt.current = null;
          setActiveId(null);
        });
    },
    [element],
  );

  return { playRange, activeId, currentTime, playing };
}
