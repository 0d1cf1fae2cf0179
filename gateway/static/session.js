// Signing in and out, shared by the pages: the header's session box and the sign-in form
// (the same element ids on every page). A page says what to do when someone is signed in,
// signed out, or replaced by another user.

import { $, api, showError, whenUnauthorized } from "./http.js";

const RECHECK_MS = 4000;

// Who the page is signed in as; another user must not see the last one's data.
export const session = { user: null, admin: false };

let hooks = { signedIn: () => {}, signedOut: () => {}, forget: () => {} };

/** Wire the form and ask who is signed in. */
export function startSession(pageHooks) {
  hooks = { ...hooks, ...pageHooks };
  whenUnauthorized(sessionExpired);
  $("signin-form").addEventListener("submit", signIn);
  $("signout-button").addEventListener("click", signOut);
  checkSession();
}

async function checkSession() {
  try {
    signedIn(await api("GET", "/session"));
  } catch (error) {
    if (error.status === 401) {
      showSignIn("");
    } else {
      $("session-checking").textContent = `Could not check your session: ${error.message}`;
      setTimeout(checkSession, RECHECK_MS);
    }
  }
}

function setSessionState(state) {
  $("session").dataset.state = state;
  $("session-checking").hidden = state !== "checking";
  $("signed-in").hidden = state !== "signed-in";
}

function signedIn(info) {
  if (session.user !== null && session.user !== info.user_id) hooks.forget();
  session.user = info.user_id;
  session.admin = Boolean(info.admin);
  $("session-user").textContent = `Signed in as ${info.user_id}`;
  if (info.expires_at) {
    const until = new Date(info.expires_at * 1000).toLocaleString();
    $("session-user").title = `Session valid until ${until}`;
  }
  setSessionState("signed-in");
  $("signin").hidden = true;
  hooks.signedIn(info);
}

export function showSignIn(reason) {
  setSessionState("signed-out");
  $("signin-reason").textContent = reason;
  $("signin-error").textContent = "";
  $("signin").hidden = false;
  hooks.signedOut();
  $("signin-token").focus();
}

/** Any 401 outside /session: the cookie expired or was revoked. */
export function sessionExpired() {
  if ($("session").dataset.state === "signed-out") return;
  showSignIn("Your session has ended. Sign in again to carry on; the page keeps its place.");
}

async function signIn(event) {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  if (!token) {
    $("signin-error").textContent = "Paste an access token first.";
    return;
  }
  $("signin-button").disabled = true;
  try {
    const info = await api("POST", "/session", { json: { token } });
    $("signin-token").value = "";
    signedIn(info);
  } catch (error) {
    showError($("signin-error"), error);
  } finally {
    $("signin-button").disabled = false;
  }
}

async function signOut() {
  $("signout-button").disabled = true;
  try {
    await api("DELETE", "/session");
    showSignIn("You are signed out.");
    hooks.forget();
    session.user = null;
    session.admin = false;
  } catch (error) {
    $("session-user").textContent = `Sign-out failed: ${error.message}`;
  } finally {
    $("signout-button").disabled = false;
  }
}
