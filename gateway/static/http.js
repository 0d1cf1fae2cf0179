// JSON over HTTP to the gateway, shared by the pages. Errors become ApiError with the
// gateway's own message.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const $ = (id) => document.getElementById(id);

// Told about any 401 outside /session (set by session.js: the cookie expired or was revoked).
let onUnauthorized = () => {};

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** fetch + JSON both ways; errors become ApiError with the gateway's message. */
export async function api(method, url, { json, body, headers = {}, signal } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", ...headers },
    signal,
  };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "Could not reach the server. Check the connection and try again.");
  }
  const data = await readJson(response);
  if (response.ok) return data;
  const error = apiError(response, data);
  // /session answers 401 as part of signing in; anywhere else it means the session is gone.
  if (response.status === 401 && !url.startsWith("/session")) onUnauthorized();
  throw error;
}

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function apiError(response, data) {
  const error = data && typeof data === "object" ? data.error : null;
  if (error && typeof error.message === "string") {
    const { code, message, ...details } = error;
    return new ApiError(response.status, code || "error", message, details);
  }
  const message = response.status === 503
    ? "The service is busy or restarting. Try again in a moment."
    : `The server answered ${response.status} ${response.statusText}.`.replace(" .", ".");
  return new ApiError(response.status, "http_error", message);
}

export function showError(element, error) {
  element.textContent = error ? error.message || String(error) : "";
}
