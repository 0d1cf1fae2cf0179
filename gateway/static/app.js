// taskgate's page: thumbnails, the shop and notifications over the gateway's HTTP and SSE API.
// Plain browser JavaScript (an ES module), no build step. Server data only ever goes into the
// DOM as text.

import { $, api, showError } from "./http.js";
import { LiveSource } from "./live.js";
import { startSession } from "./session.js";

// The shop has no catalogue endpoint: these are the seeded SKUs, named and priced by a quote.
const CATALOGUE_SKUS = ["MUG-01", "TEE-01", "BOOK-01", "CAP-01", "PRINT-01", "STICKER-01"];
const MAX_QUANTITY = 100; // the shop's limit per line
// Every event name a task's stream can carry (`event:` is the task's state).
const TASK_EVENTS = [
  "scheduled", "queued", "running", "progress", "retrying", "stuck", "succeeded", "failed",
  "dead", "cancelled", "reset",
];
const TERMINAL_STATES = new Set(["succeeded", "failed", "dead", "cancelled"]);
const ORDER_SERVICES = ["email", "inventory", "analytics"];
const QUOTE_DEBOUNCE_MS = 300;
// How long to wait before reopening a stream the browser gave up on (it retries dropped
// connections by itself; this is only for answers it will not retry, such as a 5xx).
const REOPEN_DELAY_MS = 2000;
const MAX_REOPENS = 5; // consecutive failures to read the task's status before giving up
const MAX_REOPEN_DELAY_MS = 30000;
const MAX_NOTIFICATIONS = 50;
const CATALOGUE_ATTEMPTS = 10;
const CATALOGUE_RETRY_MS = 1000; // times the attempt number

// ---------------------------------------------------------------------------------------------
// Task streams

const followers = new Set();

/**
 * Follows one task's status events (SSE) until its terminal event.
 *
 * A dropped connection (a gateway restarting, a network blip) is retried by the EventSource
 * itself, which resumes with Last-Event-ID: the follower keeps it open through `error` events.
 * Only when the browser gives up (readyState CLOSED: a 401, a 404, a 5xx) does the follower
 * ask the task's status endpoint what happened, and reopen the stream after the last event.
 */
class TaskFollower {
  constructor({ eventsUrl, statusUrl, onEvent, onConnection = () => {}, onError = () => {} }) {
    this.eventsUrl = eventsUrl;
    this.statusUrl = statusUrl;
    this.onEvent = onEvent;
    this.onConnection = onConnection;
    this.onError = onError;
    this.lastEventId = "";
    this.source = null;
    this.finished = false;
    this.suspended = false;
    this.reopens = 0;
    followers.add(this);
    this.open();
  }

  open() {
    const source = new EventSource(this.resumeUrl());
    this.source = source;
    for (const name of TASK_EVENTS) {
      source.addEventListener(name, (event) => this.receive(name, event));
    }
    source.addEventListener("open", () => this.onConnection("open"));
    source.addEventListener("error", () => this.connectionError(source));
  }

  /** A new EventSource starts after what the page has already shown. */
  resumeUrl() {
    if (!this.lastEventId) return this.eventsUrl;
    return `${this.eventsUrl}?after=${encodeURIComponent(this.lastEventId)}`;
  }

  receive(name, event) {
    if (event.lastEventId) this.lastEventId = event.lastEventId;
    this.reopens = 0;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    this.onEvent(name, data);
    if (TERMINAL_STATES.has(name)) this.finish();
  }

  connectionError(source) {
    if (source !== this.source || this.finished) return;
    if (source.readyState !== EventSource.CLOSED) {
      this.onConnection("reconnecting"); // the browser retries and resumes by itself
      return;
    }
    this.source = null;
    this.recover();
  }

  async recover() {
    try {
      const status = await api("GET", this.statusUrl);
      if (this.finished || this.suspended) return;
      this.onEvent("reset", status);
      if (TERMINAL_STATES.has(status.state)) {
        this.finish();
        return;
      }
    } catch (error) {
      if (error.status === 401) {
        this.suspended = true; // resumed after the user signs in again
        return;
      }
      // A 404 (or any other 4xx) will not get better by asking again.
      const transient = [0, 429, 500, 502, 503, 504].includes(error.status);
      if (!transient || this.reopens >= MAX_REOPENS) {
        this.onError(error);
        this.finish();
        return;
      }
    }
    this.reopens += 1;
    this.onConnection("reconnecting");
    // Back off while the stream keeps being refused (e.g. 429: too many open streams).
    const delay = Math.min(REOPEN_DELAY_MS * this.reopens, MAX_REOPEN_DELAY_MS);
    setTimeout(() => this.reopenIfWanted(), delay);
  }

  reopenIfWanted() {
    if (!this.finished && !this.suspended && this.source === null) this.open();
  }

  suspend() {
    this.suspended = true;
    if (this.source) this.source.close();
    this.source = null;
  }

  resume() {
    if (this.finished || !this.suspended) return;
    this.suspended = false;
    this.reopens = 0;
    this.open();
  }

  finish() {
    this.finished = true;
    if (this.source) this.source.close();
    this.source = null;
    followers.delete(this);
  }
}

// ---------------------------------------------------------------------------------------------
// Session

/** Someone signed in: an admin may notify everyone; everyone else reaches their own pages. */
function signedIn(info) {
  $("notify-everyone-row").hidden = !info.admin;
  if (!info.admin) $("notify-everyone").checked = false;
  showApp();
}

function signedOut() {
  $("app").hidden = true;
  suspendStreams();
}

function showApp() {
  $("app").hidden = false;
  if (!catalogue.loaded) loadCatalogue();
  resumeStreams();
}

/** Signing out (or in as someone else) drops what the page showed of the last user's work. */
function forgetUserState() {
  for (const follower of [...followers]) follower.finish();
  uploadFollower = null;
  orderFollower = null;
  pendingOrder = null;
  resetUploadView();
  setUploadState("idle", "");
  $("upload-form").reset();
  $("order-status").hidden = true;
  $("order-error").textContent = "";
  $("order-email").value = "";
  $("notification-list").replaceChildren();
  seenNotifications.clear();
}

function suspendStreams() {
  closeNotifications();
  for (const follower of followers) follower.suspend();
}

function resumeStreams() {
  openNotifications();
  for (const follower of followers) follower.resume();
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

let uploadFollower = null;
let uploadTaskUrl = null; // the task on show, while it can be cancelled

/** DELETE the task on show; its stream then ends with `cancelled` (or what came first). */
async function cancelUpload() {
  if (!uploadTaskUrl) return;
  $("upload-cancel").disabled = true;
  try {
    const answer = await api("DELETE", uploadTaskUrl);
    if (answer && answer.cancel === "requested") setUploadState("cancelling", "Stopping…");
  } catch (error) {
    showError($("upload-error"), error);
  } finally {
    $("upload-cancel").disabled = false;
  }
}

async function submitUpload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) {
    $("upload-error").textContent = "Choose an image first.";
    return;
  }
  if (uploadFollower) uploadFollower.finish(); // a new upload replaces the one on show
  resetUploadView();
  setUploadState("uploading", "Uploading…");
  $("upload-button").disabled = true;
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const accepted = await api("POST", "/uploads", { body: form });
    setUploadState("queued", "Queued…");
    uploadTaskUrl = accepted.status_url;
    $("upload-cancel").hidden = false;
    uploadFollower = new TaskFollower({
      eventsUrl: accepted.events_url,
      statusUrl: accepted.status_url,
      onEvent: drawUploadEvent,
      onConnection: drawUploadConnection,
      onError: (error) => showError($("upload-error"), error),
    });
  } catch (error) {
    setUploadState("error", "");
    showError($("upload-error"), error);
  } finally {
    $("upload-button").disabled = false;
  }
}

function resetUploadView() {
  uploadTaskUrl = null;
  $("upload-cancel").hidden = true;
  $("upload-progress").value = 0;
  $("upload-error").textContent = "";
  $("upload-connection").textContent = "";
  $("thumbnails").replaceChildren();
}

function setUploadState(state, message) {
  $("upload-status").dataset.state = state;
  $("upload-message").textContent = message;
}

/** One status event, or (for `reset`) the task's whole current state: redraw from it. */
function drawUploadEvent(name, data) {
  const state = name === "reset" ? data.state : name;
  if (typeof data.percent === "number") $("upload-progress").value = data.percent;
  if (TERMINAL_STATES.has(state)) $("upload-cancel").hidden = true;
  switch (state) {
    case "scheduled":
      setUploadState(state, `Scheduled for ${new Date(data.run_at * 1000).toLocaleString()}…`);
      break;
    case "queued":
      setUploadState(state, "Queued…");
      break;
    case "running":
      setUploadState(state, data.attempt > 1 ? `Running (attempt ${data.attempt})…` : "Running…");
      break;
    case "progress":
      setUploadState(state, `${Math.round(data.percent ?? 0)} % · ${data.message ?? ""}`);
      break;
    case "retrying":
      setUploadState(state, `Attempt ${data.attempt} failed (${data.error}); retrying…`);
      break;
    case "stuck":
      setUploadState(state, "Its worker stopped; queued again…");
      break;
    case "succeeded":
      $("upload-progress").value = 100;
      setUploadState(state, "Done.");
      showThumbnails(data.result);
      break;
    case "cancelled":
      setUploadState(state, "Cancelled.");
      break;
    case "failed":
    case "dead":
      setUploadState(state, "Failed.");
      $("upload-error").textContent = data.error || "The task failed.";
      break;
  }
}

function drawUploadConnection(connection) {
  $("upload-status").dataset.connection = connection;
  $("upload-connection").textContent =
    connection === "reconnecting" ? "Connection lost; reconnecting…" : "";
}

/** One figure per size: WebP where the browser takes it, JPEG otherwise. */
function showThumbnails(result) {
  const bySize = new Map();
  for (const output of result?.outputs ?? []) {
    const size = output.size_px ?? output.width;
    if (!bySize.has(size)) bySize.set(size, {});
    bySize.get(size)[output.format?.toLowerCase() ?? "file"] = output;
  }
  const figures = [...bySize.entries()]
    .sort(([a], [b]) => a - b)
    .map(([size, formats]) => thumbnailFigure(size, formats));
  $("thumbnails").replaceChildren(...figures);
}

function outputUrl(output) {
  // Status events carry only the path (`<task_id>/<name>`); GET /tasks/{id} adds the url.
  return output.url ?? `/files/${output.path.split("/").map(encodeURIComponent).join("/")}`;
}

function thumbnailFigure(size, formats) {
  const main = formats.jpeg ?? formats.webp ?? Object.values(formats)[0];
  const figure = document.createElement("figure");
  figure.className = "thumbnail";
  figure.dataset.size = String(size);
  const picture = document.createElement("picture");
  if (formats.webp && main !== formats.webp) {
    const source = document.createElement("source");
    source.type = "image/webp";
    source.srcset = outputUrl(formats.webp);
    picture.append(source);
  }
  const img = document.createElement("img");
  img.src = outputUrl(main);
  img.alt = `Thumbnail, ${main.width}×${main.height} pixels`;
  img.width = main.width;
  img.height = main.height;
  img.decoding = "async";
  picture.append(img);
  const caption = document.createElement("figcaption");
  caption.append(`${size} px `);
  for (const [format, output] of Object.entries(formats)) {
    const link = document.createElement("a");
    link.href = outputUrl(output);
    link.textContent = format.toUpperCase();
    caption.append(" ", link);
  }
  figure.append(picture, caption);
  return figure;
}

// ---------------------------------------------------------------------------------------------
// Shop

const catalogue = { loaded: false, loading: false, currency: "EUR", products: new Map() };

function money(cents) {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: catalogue.currency })
    .format(cents / 100);
}

function buildCatalogueRows() {
  const rows = CATALOGUE_SKUS.map((sku) => {
    const row = document.createElement("tr");
    row.dataset.sku = sku;
    row.dataset.testid = `product-${sku}`;
    const name = document.createElement("th");
    name.scope = "row";
    name.className = "product-name";
    name.textContent = sku;
    const stock = document.createElement("span");
    stock.className = "stock muted";
    name.append(document.createElement("br"), stock);
    const price = document.createElement("td");
    price.className = "num product-price";
    price.textContent = "…";
    const quantity = document.createElement("td");
    quantity.className = "num";
    const label = document.createElement("label");
    label.className = "visually-hidden";
    label.htmlFor = `qty-${sku}`;
    label.textContent = `Quantity of ${sku}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "number", id: `qty-${sku}`, min: "0", step: "1", value: "0" });
    input.max = String(MAX_QUANTITY);
    input.inputMode = "numeric";
    input.dataset.sku = sku;
    input.dataset.testid = `qty-${sku}`;
    input.addEventListener("input", scheduleQuote);
    quantity.append(label, input);
    row.append(name, price, quantity);
    return row;
  });
  $("catalogue-rows").replaceChildren(...rows);
}

/** Names and prices from a quote of one of everything; stock from inventory.check. */
async function loadCatalogue(attempt = 1) {
  if (catalogue.loading) return;
  catalogue.loading = true;
  try {
    const [quote, stock] = await Promise.all([
      api("POST", "/rpc/orders.quote", {
        json: { lines: CATALOGUE_SKUS.map((sku) => ({ sku, quantity: 1 })) },
      }),
      api("POST", "/rpc/inventory.check", { json: { skus: CATALOGUE_SKUS } }),
    ]);
    catalogue.currency = quote.currency || catalogue.currency;
    for (const line of quote.lines) {
      catalogue.products.set(line.sku, {
        name: line.name,
        priceCents: line.line_total_cents, // one unit, tax included
        available: stock.available?.[line.sku] ?? 0,
      });
    }
    catalogue.loaded = true;
    $("catalogue-error").textContent = "";
    drawCatalogue();
    scheduleQuote();
  } catch (error) {
    // No RPC server yet, a timeout, the network: worth another go in a moment.
    const transient = [0, 503, 504].includes(error.status);
    const retry = transient && attempt < CATALOGUE_ATTEMPTS;
    $("catalogue-error").textContent =
      `Could not load the catalogue: ${error.message}${retry ? " Trying again…" : ""}`;
    if (retry) setTimeout(() => loadCatalogue(attempt + 1), CATALOGUE_RETRY_MS * attempt);
  } finally {
    catalogue.loading = false;
  }
}

async function refreshStock() {
  try {
    const stock = await api("POST", "/rpc/inventory.check", { json: { skus: CATALOGUE_SKUS } });
    for (const [sku, product] of catalogue.products) {
      product.available = stock.available?.[sku] ?? 0;
    }
    drawCatalogue();
  } catch {
    // Stock shown is advisory; the order itself is checked by the server.
  }
}

function drawCatalogue() {
  for (const row of $("catalogue-rows").children) {
    const product = catalogue.products.get(row.dataset.sku);
    if (!product) continue;
    const input = row.querySelector("input");
    row.querySelector(".product-name").firstChild.textContent = product.name;
    row.querySelector("label").textContent = `Quantity of ${product.name}`;
    row.querySelector(".product-price").textContent = money(product.priceCents);
    row.querySelector(".stock").textContent =
      product.available > 0 ? `${product.available} in stock` : "Sold out";
    input.max = String(Math.min(MAX_QUANTITY, product.available));
    input.disabled = product.available <= 0;
  }
}

/** The cart's lines, or null if a quantity is not a whole number the shop accepts. */
function cartLines() {
  const lines = [];
  let valid = true;
  for (const input of $("catalogue-rows").querySelectorAll("input")) {
    const text = input.value.trim();
    const quantity = text === "" ? 0 : Number(text);
    const ok = Number.isInteger(quantity) && quantity >= 0 && quantity <= Number(input.max);
    input.setAttribute("aria-invalid", String(!ok));
    if (!ok) valid = false;
    else if (quantity > 0) lines.push({ sku: input.dataset.sku, quantity });
  }
  return valid ? lines : null;
}

let quoteTimer = null;
let quoteRequest = null;
let quoteReady = false;

function scheduleQuote() {
  // Typing "12" is two input events: wait until the user pauses, then ask once.
  clearTimeout(quoteTimer);
  quoteReady = false;
  updateOrderButton();
  quoteTimer = setTimeout(refreshQuote, QUOTE_DEBOUNCE_MS);
}

async function refreshQuote() {
  if (quoteRequest) quoteRequest.abort(); // only the newest cart's quote may be shown
  quoteRequest = null;
  const lines = cartLines();
  if (lines === null) {
    drawQuoteError(`Quantities are whole numbers from 0 up to what is in stock (at most ${MAX_QUANTITY}).`);
    return;
  }
  if (lines.length === 0) {
    drawEmptyQuote();
    return;
  }
  const request = new AbortController();
  quoteRequest = request;
  $("quote").dataset.state = "loading";
  $("quote").setAttribute("aria-busy", "true");
  try {
    const quote = await api("POST", "/rpc/orders.quote", { json: { lines }, signal: request.signal });
    if (quoteRequest === request) drawQuote(quote);
  } catch (error) {
    if (error.name !== "AbortError" && quoteRequest === request) drawQuoteError(error.message);
  }
}

function drawQuote(quote) {
  catalogue.currency = quote.currency || catalogue.currency;
  $("quote-subtotal").textContent = money(quote.subtotal_cents);
  $("quote-tax").textContent = money(quote.tax_cents);
  $("quote-shipping").textContent = quote.shipping_cents ? money(quote.shipping_cents) : "free";
  $("quote-total").textContent = money(quote.total_cents);
  $("quote-figures").hidden = false;
  $("quote-empty").hidden = true;
  $("quote-error").textContent = "";
  $("quote").dataset.state = "ready";
  $("quote").removeAttribute("aria-busy");
  quoteReady = true;
  updateOrderButton();
}

function drawEmptyQuote() {
  $("quote-figures").hidden = true;
  $("quote-empty").hidden = false;
  $("quote-error").textContent = "";
  $("quote").dataset.state = "empty";
  $("quote").removeAttribute("aria-busy");
  quoteReady = false;
  updateOrderButton();
}

function drawQuoteError(message) {
  $("quote-figures").hidden = true;
  $("quote-empty").hidden = true;
  $("quote-error").textContent = message;
  $("quote").dataset.state = "error";
  $("quote").removeAttribute("aria-busy");
  quoteReady = false;
  updateOrderButton();
}

// The order being placed: its key is reused for the same request until one succeeds, so a
// double click or a retry after a lost answer cannot order twice.
let pendingOrder = null;
let orderInFlight = false;
let orderFollower = null;

function updateOrderButton() {
  $("order-button").disabled = orderInFlight || !quoteReady;
}

/** A random UUID; crypto.randomUUID exists only in secure contexts (https, localhost). */
function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function placeOrder(event) {
  event.preventDefault();
  if (orderInFlight) return;
  $("order-error").textContent = "";
  const email = $("order-email");
  if (!email.value.trim() || !email.checkValidity()) {
    $("order-error").textContent = "Enter the email address for the confirmation.";
    email.focus();
    return;
  }
  const lines = cartLines();
  if (!lines || lines.length === 0) {
    $("order-error").textContent = "Choose at least one product.";
    return;
  }
  const body = JSON.stringify({ email: email.value.trim(), lines });
  if (!pendingOrder || pendingOrder.body !== body) {
    pendingOrder = { body, key: newIdempotencyKey() };
  }
  orderInFlight = true;
  updateOrderButton();
  $("order-button").textContent = "Placing order…";
  try {
    const order = await api("POST", "/orders", {
      body,
      headers: { "Content-Type": "application/json", "Idempotency-Key": pendingOrder.key },
    });
    pendingOrder = null;
    followOrder(order);
  } catch (error) {
    $("order-error").textContent = orderErrorMessage(error);
  } finally {
    orderInFlight = false;
    $("order-button").textContent = "Place order";
    updateOrderButton();
  }
}

function orderErrorMessage(error) {
  const available = error.details?.available;
  if (error.code === "out_of_stock" && available) {
    const left = Object.entries(available).map(([sku, units]) => `${sku}: ${units}`).join(", ");
    return `${error.message} (available: ${left})`;
  }
  return error.message;
}

function followOrder(order) {
  if (orderFollower) orderFollower.finish();
  $("order-status").hidden = false;
  $("order-id").textContent = order.order_id;
  for (const service of ORDER_SERVICES) drawService(service, null, "");
  drawOrderState("queued", `Placed: ${money(order.total_cents)}. Waiting for the services…`);
  orderFollower = new TaskFollower({
    eventsUrl: order.events_url,
    statusUrl: order.task_url ?? `/tasks/${encodeURIComponent(order.order_id)}`,
    onEvent: drawOrderEvent,
    onError: (error) => { $("order-error").textContent = error.message; },
  });
}

function drawOrderState(state, text) {
  $("order-status").dataset.state = state;
  $("order-state").textContent = text;
}

/** `ok` is true, false, or null (not heard from yet). */
function drawService(service, ok, detail) {
  const row = $("order-services").querySelector(`[data-service="${service}"]`);
  if (!row) return;
  const state = ok === null ? "pending" : ok ? "done" : "failed";
  row.dataset.state = state;
  row.querySelector(".service-status").textContent = state;
  row.querySelector(".service-detail").textContent = detail ?? "";
}

function drawServices(services) {
  for (const [service, part] of Object.entries(services ?? {})) {
    drawService(service, Boolean(part.ok), part.detail);
  }
}

function drawOrderEvent(name, data) {
  const state = name === "reset" ? data.state : name;
  if (state === "progress" && data.result?.service) {
    drawService(data.result.service, Boolean(data.result.ok), data.result.detail);
  }
  if (data.result?.services) drawServices(data.result.services);
  if (state === "succeeded") {
    drawOrderState(state, "Succeeded: confirmed, reserved and recorded.");
    refreshStock();
  } else if (state === "failed" || state === "dead") {
    drawOrderState(state, `Failed: ${data.error || "a service could not do its part"}.`);
    refreshStock();
  } else if (state === "progress") {
    drawOrderState(state, "In progress…");
  }
}

// ---------------------------------------------------------------------------------------------
// Notifications

const notificationSource = new LiveSource("/notifications/stream", {
  events: { notification: addNotification },
  onState: setNotificationsLive,
});
const seenNotifications = new Set();

function openNotifications() {
  notificationSource.open();
}

function closeNotifications() {
  notificationSource.close();
}

function setNotificationsLive(state) {
  const badge = $("notifications-live");
  badge.dataset.state = state;
  badge.textContent = { open: "live", connecting: "connecting…", closed: "offline" }[state];
}

function addNotification(notification) {
  if (notification.notification_id) {
    if (seenNotifications.has(notification.notification_id)) return;
    seenNotifications.add(notification.notification_id);
  }
  const level = ["info", "success", "warning", "error"].includes(notification.level)
    ? notification.level
    : "info";
  const item = document.createElement("li");
  item.className = `notification level-${level}`;
  item.dataset.level = level;
  item.dataset.testid = "notification";
  const badge = document.createElement("span");
  badge.className = "level";
  badge.textContent = level;
  const title = document.createElement("strong");
  title.className = "notification-title";
  title.textContent = notification.title ?? "";
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  item.append(badge, " ", title, " ", time);
  if (notification.sender) {
    // Who sent it, as the gateway authenticated them: never text the sender chose.
    const sender = document.createElement("span");
    sender.className = "notification-sender";
    sender.dataset.testid = "notification-sender";
    const audience = notification.to === "*" ? " to everyone" : "";
    sender.textContent = ` from ${notification.sender}${audience}`;
    item.append(sender);
  }
  if (notification.body) {
    const body = document.createElement("p");
    body.className = "notification-body";
    body.textContent = notification.body;
    item.append(body);
  }
  const list = $("notification-list");
  list.prepend(item);
  while (list.children.length > MAX_NOTIFICATIONS) list.lastElementChild.remove();
}

async function sendNotification(event) {
  event.preventDefault();
  $("notify-error").textContent = "";
  const title = $("notify-title").value.trim();
  if (!title) {
    $("notify-error").textContent = "A notification needs a title.";
    $("notify-title").focus();
    return;
  }
  $("notify-button").disabled = true;
  try {
    await api("POST", "/notifications", {
      json: {
        title,
        body: $("notify-body").value,
        level: $("notify-level").value,
        ...($("notify-everyone").checked ? { to: "*" } : {}),
      },
    });
    $("notify-title").value = "";
    $("notify-body").value = "";
  } catch (error) {
    showError($("notify-error"), error);
  } finally {
    $("notify-button").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------

function start() {
  $("upload-form").addEventListener("submit", submitUpload);
  $("upload-cancel").addEventListener("click", cancelUpload);
  $("order-form").addEventListener("submit", placeOrder);
  $("notify-form").addEventListener("submit", sendNotification);
  buildCatalogueRows();
  startSession({ signedIn, signedOut, forget: forgetUserState });
}

start();
