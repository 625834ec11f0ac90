// Thin client for the Wardwatch REST API. Errors carry the server's {"detail": ...} message.
// Admin calls take the admin token; without one no Authorization header is sent (development mode is open).
const BASE = "/api/v1";

async function request(path, { token, headers, ...options } = {}) {
  const response = await fetch(BASE + path, {
    ...options,
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json",
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

export const api = {
  health: () => request("/health"),
  models: () => request("/models"),
  events: (params) => request("/events?" + new URLSearchParams(params)),
  event: (id) => request(`/events/${id}`),
  explanations: (id) => request(`/events/${id}/explanations`),
  review: (id, body) => request(`/events/${id}/review`, { method: "POST", body: JSON.stringify(body) }),
  jobs: (params) => request("/jobs?" + new URLSearchParams(params)),
  job: (id) => request(`/jobs/${id}`),
  // admin
  activate: (id, token) => request(`/models/${id}/activate`, { method: "POST", token }),
  startFinetune: (body, token) => request("/finetune-jobs", { method: "POST", body: JSON.stringify(body), token }),
  cancelJob: (id, token) => request(`/jobs/${id}/cancel`, { method: "POST", token }),
};
