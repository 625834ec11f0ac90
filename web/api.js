// Thin client for the Wardwatch REST API. Errors carry the server's {"detail": ...} message.
// Requests ride on the session cookie; writes add the session's CSRF token. A 401 (the session ended) shows
// the sign-in form and the request is sent again once the user has signed in, but only if the same user
// signed in again: a request (a review, an activation) is never resent on behalf of somebody else, and
// nothing the previous user saw stays on the page, so a different user gets a fresh page (a reload).
import { csrfToken, currentUser, signIn } from "./session.js";

const BASE = "/api/v1";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export async function request(path, { headers, ...options } = {}, retried = false) {
  const method = (options.method || "GET").toUpperCase();
  const response = await fetch(BASE + path, {
    ...options,
    headers: {
      // a FormData body (an upload) sets its own multipart Content-Type with the boundary
      ...(options.body instanceof FormData ? {} : { "Content-Type": "application/json" }),
      Accept: "application/json",
      ...(UNSAFE.has(method) && csrfToken() ? { "X-CSRF-Token": csrfToken() } : {}),
      ...headers,
    },
  });
  if (response.status === 401 && !retried) {
    const before = currentUser()?.id ?? null;
    const now = await signIn("Your session has ended. Sign in again to continue.");
    if (before !== null && now?.user?.id !== before) {
      window.location.reload();
      return new Promise(() => {});  // never settles: the page is going away, nothing may act on it
    }
    return request(path, { headers, ...options }, true);
  }
  if (!response.ok) {
    let detail = response.statusText || "request failed";
    try {
      detail = readableDetail((await response.json()).detail) || detail;
    } catch { /* not JSON: a proxy's page, an empty body */ }
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** The server's ``detail`` as one sentence: a string as it is; FastAPI's validation list as "field: message; …"
 * (never "[object Object]" or a JSON dump in front of a clinician). */
export function readableDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => {
      if (typeof item === "string") return item;
      const where = (item.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
      return where ? `${where}: ${item.msg}` : String(item.msg ?? "invalid");
    }).join("; ");
  }
  if (detail && typeof detail === "object") return String(detail.message || detail.msg || "request refused");
  return "";
}

/** Query parameters without the empty ones (an empty filter means "any"). */
const query = (params = {}) => new URLSearchParams(
  Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));

export const api = {
  health: () => request("/health"),
  models: () => request("/models"),
  events: (params) => request("/events?" + query(params)),
  recording: (id) => request(`/recordings/${id}`),
  maps: (id) => request(`/events/${id}/maps`),
  timeline: (id, params) => request(`/recordings/${id}/timeline?` + query(params)),
  addEvent: (recordingId, body) => request(`/recordings/${recordingId}/events`, {
    method: "POST", body: JSON.stringify(body) }),
  event: (id) => request(`/events/${id}`),
  explanations: (id) => request(`/events/${id}/explanations`),
  review: (id, body) => request(`/events/${id}/review`, { method: "POST", body: JSON.stringify(body) }),
  undoReview: (id, reviewId) => request(`/events/${id}/review/undo`, {
    method: "POST", ...(reviewId ? { body: JSON.stringify({ review_id: reviewId }) } : {}),
  }),
  reviews: (id, params) => request(`/events/${id}/reviews?` + new URLSearchParams(params)),
  jobs: (params) => request("/jobs?" + new URLSearchParams(params)),
  job: (id) => request(`/jobs/${id}`),
  // admin
  activate: (id) => request(`/models/${id}/activate`, { method: "POST" }),
  startFinetune: (body) => request("/finetune-jobs", { method: "POST", body: JSON.stringify(body) }),
  cancelJob: (id) => request(`/jobs/${id}/cancel`, { method: "POST" }),
  // admin pages (recordings, users, audit)
  recordings: (params) => request("/recordings?" + new URLSearchParams(params)),
  upload: (form) => request("/recordings", { method: "POST", body: form }),
  importRecording: (body) => request("/recordings", { method: "POST", body: JSON.stringify(body) }),
  stopStream: (id) => request(`/recordings/${id}/stop`, { method: "POST" }),
  users: () => request("/users"),
  createUser: (body) => request("/users", { method: "POST", body: JSON.stringify(body) }),
  disableUser: (username) => request(`/users/${encodeURIComponent(username)}/disable`, { method: "POST" }),
  tokens: () => request("/tokens"),
  createToken: (body) => request("/tokens", { method: "POST", body: JSON.stringify(body) }),
  revokeToken: (id) => request(`/tokens/${id}`, { method: "DELETE" }),
  audit: (params) => request("/audit?" + new URLSearchParams(params)),
};
