import { stateTone, stateWords } from "./model";

/** A model's state as a badge: data-state is the raw state, the text is in words. */
export function StateBadge({ state, hasReason = false }: { state: string; hasReason?: boolean }) {
  return (
    <span className={`badge badge-${stateTone(state, hasReason)}`} data-state={state}>
      {stateWords(state)}
    </span>
  );
}
