// Entry point of the console: session (login by token, logout), hash routing,
// and the header. Pages live in their own modules; each returns a cleanup
// function that stops its polling and live feeds when the route changes.
import { ApiError, get, post, setCsrf, setUnauthorizedHandler } from "./api.js";
import { h, notify, replace } from "./dom.js";
import { workflowsPage } from "./workflows.js";
import { workflowPage } from "./workflow.js";
import { clusterPage } from "./cluster.js";

const app = document.getElementById("app");
const session = { principal: null };
let cleanup = null;

function setSession(payload) {
  session.principal = payload ? payload.principal : null;
  setCsrf(payload ? payload.csrf : null);
  document.getElementById("principal").textContent = session.principal || "";
  document.getElementById("session").hidden = !session.principal;
  document.getElementById("nav").hidden = !session.principal;
}

function stopPage() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // a page's cleanup must not break navigation
    }
  }
  cleanup = null;
}

/** The login form: the token goes in a password input and is POSTed once. */
function showLogin(message) {
  stopPage();
  setSession(null);
  const error = h("p", { class: "login-error", testid: "login-error", role: "alert" }, message || "");
  error.hidden = !message;
  const input = h("input", {
    type: "password", name: "token", autocomplete: "current-password", required: true,
    placeholder: "Gateway access token", testid: "login-token", id: "login-token",
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "login-submit" }, "Sign in");
  const form = h("form", { class: "login-card", testid: "login-form" },
    h("h1", {}, "Sign in to AgenticFlow"),
    h("p", { class: "muted" }, "Paste the access token the gateway gave you. It is exchanged for a session " +
      "cookie and is not stored by this page."),
    h("label", { for: "login-token" }, "Access token"),
    input, error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      await login(input.value.trim());
      input.value = "";
      route();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  replace(app, h("div", { class: "login-wrap" }, form));
  input.focus();
}

async function login(token) {
  const payload = await post("/console/api/login", { token }, { quiet401: true });
  setSession(payload);
  return payload;
}

async function logout() {
  try {
    await post("/console/api/logout", {}, { quiet401: true });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) notify(err.message, "error");
  }
  setSession(null);
  history.replaceState(null, "", `${location.pathname}#/workflows`);
  showLogin("");
}

/** Render the page for the current hash. */
function route() {
  if (!session.principal) {
    showLogin("");
    return;
  }
  stopPage();
  const hash = location.hash.replace(/^#/, "") || "/workflows";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (parts[0] || "workflows"));
  }
  const view = h("div", { class: "page" });
  replace(app, view);
  if (parts[0] === "cluster") {
    document.title = "Cluster · AgenticFlow";
    cleanup = clusterPage(view);
  } else if (parts[0] === "workflows" && parts.length >= 2) {
    let id = parts.slice(1).join("/");
    try {
      id = decodeURIComponent(id);
    } catch {
      // a malformed %-escape: use the text as it is
    }
    document.title = `${id} · AgenticFlow`;
    cleanup = workflowPage(view, id, params);
  } else {
    document.title = "Workflows · AgenticFlow";
    cleanup = workflowsPage(view, params);
  }
}

async function start() {
  setUnauthorizedHandler((message) => showLogin(message || "Your session ended: sign in again."));
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  // A dev login link carries the token in the fragment (never sent to the
  // server by the browser): the whole fragment is `#token=...`. It is dropped
  // from the URL and history at once, and used only when this browser has no
  // session: a link from another site must not swap the user's session for
  // the sender's principal behind their back (login CSRF).
  const match = /^#token=([A-Za-z0-9_\-.~%]{1,512})$/.exec(location.hash);
  let token = null;
  if (match) {
    token = match[1];
    try {
      token = decodeURIComponent(token);
    } catch {
      // not %-encoded: use it as it is
    }
    history.replaceState(null, "", `${location.pathname}#/workflows`);
  }
  let session = null;
  try {
    session = await get("/console/api/session", undefined, { quiet401: true });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      showLogin(err.message);
      return;
    }
  }
  if (session) {
    setSession(session);
    if (token) {
      notify(`Already signed in as ${session.principal}: the link's token was not used ` +
        "(log out first to sign in with it).", "info");
    }
    route();
    return;
  }
  if (!token) {
    showLogin("");
    return;
  }
  try {
    await login(token);
  } catch (err) {
    showLogin(err.message);
    return;
  }
  route();
}

start();
