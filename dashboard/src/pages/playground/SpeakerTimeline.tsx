// Who speaks when: one row per speaker, each turn a button that plays that turn of the audio.
import { useMemo } from "react";
import type { RangePlayer } from "./player";
import { axisTicks, barLabel, formatClock, layoutTimeline, type Turn } from "./timeline";

export interface SpeakerTimelineProps {
  turns: readonly Turn[];
  /** The audio's duration, in seconds (the timeline's full width). */
  duration: number;
  player: RangePlayer;
}

export function SpeakerTimeline({ turns, duration, player }: SpeakerTimelineProps) {
  const layout = useMemo(() => layoutTimeline(turns, duration), [turns, duration]);
  const ticks = useMemo(() => axisTicks(layout.duration), [layout.duration]);
  const tickDecimals = ticks.length > 1 && ticks[1] < 1 ? 1 : 0;
  const { activeId, currentTime, playing, playRange } = player;
  const playhead = layout.duration > 0 ? Math.min(100, Math.max(0, (currentTime / layout.duration) * 100)) : 0;
  const showPlayhead = playing || currentTime > 0;

  if (!layout.rows.length) return <p className="muted">No speaker turns were found in this audio.</p>;

  return (
    <div className="pg-timeline">
      <ul className="pg-legend" aria-label="Speakers">
        {layout.rows.map((row) => (
          <li key={row.speaker}>
            <span className="pg-swatch" style={{ background: row.color }} aria-hidden="true" />
            {row.speaker} <span className="muted">({row.total.toFixed(1)} s)</span>
          </li>
        ))}
      </ul>
      <div className="pg-timeline-scroll">
        <div role="group" aria-label="Speaker timeline" className="pg-timeline-grid">
          {layout.rows.map((row) => (
            <div className="pg-tl-row" key={row.speaker}>
              <span className="pg-tl-label" style={{ borderLeftColor: row.color }}>
                {row.speaker}
              </span>
              <div className="pg-tl-track">
                {row.bars.map((bar) => {
                  const current = activeId === bar.id || (activeId === null && playing && bar.start <= currentTime && currentTime < bar.end);
                  return (
                    <button
                      key={bar.id}
                      type="button"
                      className={current ? "pg-bar pg-bar-active" : "pg-bar"}
                      style={{ left: `${bar.left}%`, width: `${bar.width}%`, background: row.color }}
                      aria-label={barLabel(bar)}
                      aria-current={current ? "true" : undefined}
                      title={`${bar.speaker}: ${formatClock(bar.start, 1)} – ${formatClock(bar.end, 1)}`}
                      onClick={() => playRange(bar.start, bar.end, bar.id)}
                    />
                  );
                })}
                {showPlayhead && <span className="pg-playhead" style={{ left: `${playhead}%` }} aria-hidden="true" />}
              </div>
            </div>
          ))}
          <div className="pg-tl-row pg-tl-axis-row" aria-hidden="true">
            <span className="pg-tl-label pg-tl-axis-label">time</span>
            <div className="pg-tl-axis">
              {ticks.map((tick) => (
                <span key={tick} className="pg-tick" style={{ left: `${layout.duration > 0 ? (tick / layout.duration) * 100 : 0}%` }}>
                  {formatClock(tick, tickDecimals)}
                </span>
              ))}
            </div>
          </div>
        </div>
      </div>
    </div>
  );
}
