// Same-origin calls to the gateway. The session is an HttpOnly cookie set by
// /console/api/login; every POST carries the CSRF token the login returned.
// The browser never sees a NATS credential: the gateway talks to the cluster.

let csrfToken = null;
let onUnauthorized = () => {};

/** An error answer of the gateway: {"error": {"code", "message"}}. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "error";
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}

/** What to do when a call answers 401 (the session expired): show the login form. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** A path with a query string from an object (null/undefined/"" values left out). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") query.set(k, String(v));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** A workflow route: /workflows/<id>/<rest>, the id escaped. */
export function wfPath(id, rest = "") {
  return `/workflows/${encodeURIComponent(id)}${rest ? `/${rest}` : ""}`;
}

async function call(method, path, body, { quiet401 = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (csrfToken) init.headers["X-CSRF-Token"] = csrfToken;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `The gateway cannot be reached (${err.message}).`);
  }
  let payload = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
  }
  if (!response.ok) {
    const error = payload && payload.error ? payload.error : {};
    const message = error.message || `${response.status} ${response.statusText}`;
    if (response.status === 401 && !quiet401) onUnauthorized(message);
    throw new ApiError(response.status, error.code, message);
  }
  return payload;
}

export const get = (path, params, options) => call("GET", withQuery(path, params), undefined, options);
export const post = (path, body, options) => call("POST", path, body, options);

/**
 * Follow an SSE route with EventSource (the session cookie authenticates it).
 * handlers: {event: fn(data, id), chunk: fn(...), end: fn(), error: fn()}.
 * The browser reconnects by itself, sending Last-Event-ID; after `end` we close.
 * Returns a function that closes the stream.
 */
export function follow(path, handlers) {
  const source = new EventSource(path, { withCredentials: true });
  for (const [name, handler] of Object.entries(handlers)) {
    if (name === "error" || name === "end") continue;
    source.addEventListener(name, (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      handler(data, message.lastEventId);
    });
  }
  source.addEventListener("end", () => {
    source.close();
    if (handlers.end) handlers.end();
  });
  source.addEventListener("error", () => {
    // CLOSED: the server refused (e.g. 401/404); CONNECTING: the browser retries.
    if (source.readyState === EventSource.CLOSED && handlers.error) handlers.error();
  });
  return () => source.close();
}
