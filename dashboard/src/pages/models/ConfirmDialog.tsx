import { useEffect, useId, useRef } from "react";

/** A native modal <dialog>, opened with showModal() when mounted: Escape and "Cancel" cancel,
 * the confirm button confirms. Focus starts on "Cancel" (the safe choice). */
export function ConfirmDialog({
  question,
  detail,
  confirmLabel,
  onConfirm,
  onCancel,
}: {
  question: string;
  detail?: string;
  confirmLabel: string;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const cancelRef = useRef<HTMLButtonElement>(null);
  const confirmed = useRef(false);
  const id = useId();
  const handlers = useRef({ onConfirm, onCancel });
  handlers.current = { onConfirm, onCancel };

  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (!dialog.open) dialog.showModal();
    cancelRef.current?.focus();
    const closed = () => (confirmed.current ? handlers.current.onConfirm() : handlers.current.onCancel());
    dialog.addEventListener("close", closed);
    // No close() here: its "close" event arrives later, and would cancel a dialog that React's
    // StrictMode re-runs this effect for; removing the element closes the modal anyway.
    return () => dialog.removeEventListener("close", closed);
  }, []);

  const finish = (confirm: boolean) => {
    confirmed.current = confirm;
    const dialog = ref.current;
    if (dialog?.open && typeof dialog.close === "function") dialog.close();
    else (confirm ? onConfirm : onCancel)();
  };

  return (
    <dialog ref={ref} className="confirm" aria-labelledby={`${id}-q`} aria-describedby={detail ? `${id}-d` : undefined}>
      <p id={`${id}-q`} className="confirm-question">
        {question}
      </p>
      {detail && (
        <p id={`${id}-d`} className="muted">
          {detail}
        </p>
      )}
      <div className="row">
        <button type="button" className="danger" onClick={() => finish(true)}>
          {confirmLabel}
        </button>
        <button type="button" className="secondary" ref={cancelRef} onClick={() => finish(false)}>
          Cancel
        </button>
      </div>
    </dialog>
  );
}
