// Thin client for the Wardwatch REST API. Errors carry the server's {"detail": ...} message.
const BASE = "/api/v1";

async function request(path, options = {}) {
  const response = await fetch(BASE + path, {
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    ...options,
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
};
