import { ApiError } from "../../api/client";
import { formatClock } from "../overview/format";

/** True for the admin API's refusals that an admin key fixes (401), or that need loopback (403). */
export function isAccessError(error: unknown): error is ApiError {
  return error instanceof ApiError && (error.status === 401 || error.status === 403);
}

/** Why the admin API gave nothing: a missing or wrong admin key points to Settings → Access; other
 * failures in words. With `since`, the page still shows the data of that time. */
export function AdminProblem({ error, since }: { error: Error | undefined; since?: number }) {
  if (!error) return null;
  const stale = since !== undefined ? ` Showing the data of ${formatClock(since)}.` : "";
  if (isAccessError(error)) {
    return (
      <div className="error admin-problem" role="alert">
        <strong>{error.status === 401 ? "The admin key is missing or wrong." : "The admin API refused this browser."}</strong>{" "}
        {error.message}{" "}
        {error.status === 401 ? (
          <>
            Enter the admin key in <a href="#/settings/access">Settings → Access</a>.
          </>
        ) : (
          <>
            Set ADMIN_API_KEY on the adapter, then enter it in <a href="#/settings/access">Settings → Access</a>.
          </>
        )}
        {stale}
      </div>
    );
  }
  return (
    <div className="error admin-problem" role="alert">
      {error.message}
      {stale}
    </div>
  );
}
