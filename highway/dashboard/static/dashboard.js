"use strict";
// Highway's live dashboard: one page, no framework, no build step.
//
// The page keeps a model of the calls it knows (state.calls), fed by the snapshot and the
// live events of WS /dashboard/events and by GET /calls/{id} for a selected call's history,
// and renders it into the DOM. Call data only ever reaches the page through textContent,
// attributes and `new Option`, never as markup. The protocol: /tmp/notes/dashboard-protocol.md.

const STORAGE_KEY = "highway.apiKey";
const EVENTS_PATH = "/dashboard/events";
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 10000;
// An open socket that brings no snapshot in this long is treated as a dead one.
const SNAPSHOT_TIMEOUT_MS = 15000;
const CLOSE_POLICY_VIOLATION = 1008; // the server's answer to a wrong or missing key
const MAX_CALLS = 200; // older ended calls beyond this are forgotten (the snapshot has 50)
const NEAR_BOTTOM_PX = 48; // this close to the bottom counts as "at the bottom"

// A call's status only moves forward; terminal statuses share the last rank.
const STATUS_RANK = {
  in_progress: 0,
  queued: 1,
  initiated: 2,
  ringing: 3,
  "in-progress": 4,
  completed: 5,
  busy: 5,
  failed: 5,
  "no-answer": 5,
  canceled: 5,
};
const TERMINAL = new Set(["completed", "busy", "failed", "no-answer", "canceled"]);
const ANSWERED = "in-progress";
// Badge texts. "in_progress" (record created) and "in-progress" (answered) differ by one
// character in the API, so the badge says what each means; data-status keeps the raw value.
const STATUS_LABEL = {
  in_progress: "created",
  queued: "queued",
  initiated: "initiated",
  ringing: "ringing",
  "in-progress": "in progress",
  completed: "completed",
  busy: "busy",
  failed: "failed",
  "no-answer": "no answer",
  canceled: "canceled",
};
// The same changes as lines of the transcript.
const STATUS_LINE = {
  in_progress: "Call created",
  queued: "Queued",
  initiated: "Dialling",
  ringing: "Ringing",
  "in-progress": "Answered",
  completed: "Call completed",
  busy: "Line busy",
  failed: "Call failed",
  "no-answer": "No answer",
  canceled: "Call canceled",
};

const $ = (id) => document.getElementById(id);
const el = {
  layout: $("layout"),
  offlineTag: $("offline-tag"),
  connection: $("connection"),
  connectionText: $("connection-text"),
  keyForm: $("key-form"),
  apiKey: $("api-key"),
  callCount: $("call-count"),
  simulate: $("simulate-call"),
  simulateResult: $("simulate-result"),
  callList: $("call-list"),
  callListEmpty: $("call-list-empty"),
  selectedTitle: $("selected-title"),
  selectedStatus: $("selected-status"),
  selectedOutcome: $("selected-outcome"),
  selectedMeta: $("selected-meta"),
  selectedError: $("selected-error"),
  meta: {
    direction: $("meta-direction"),
    verification: $("meta-verification"),
    to: $("meta-to"),
    from: $("meta-from"),
    started: $("meta-started"),
    duration: $("meta-duration"),
    endReason: $("meta-end-reason"),
    answeredBy: $("meta-answered-by"),
  },
  detailCard: document.querySelector(".detail-card"),
  scroller: $("transcript-scroller"),
  transcript: $("transcript"),
  transcriptNote: $("transcript-note"),
  jumpLatest: $("jump-latest"),
  callForm: $("call-form"),
  callTo: $("call-to"),
  callVerification: $("call-verification"),
  reloadVerifications: $("reload-verifications"),
  manualField: $("manual-field"),
  manualVerification: $("call-verification-manual"),
  verificationNote: $("verification-note"),
  callSubmit: $("call-submit"),
  callFormResult: $("call-form-result"),
};

const narrowScreen = window.matchMedia("(max-width: 760px)");

// ---------------------------------------------------------------------------------------
// Model

/** One call as the page knows it: its record, and the lines of its transcript. */
class CallView {
  constructor(id) {
    this.id = id;
    this.data = null; // the call object (without events); null until known
    this.entries = new Map(); // key -> transcript entry
    // "none": history not fetched; "loaded": entries hold all of it (from the snapshot, a
    // GET /calls/{id}, or because the call started while we watched); "loading"; "error".
    this.history = "none";
    this.historyError = null;
    this.worker = null; // the pid of the worker carrying the call, from live events
    this.row = null; // its row in the call list, once rendered
  }
}

const state = {
  apiKey: readStoredKey(),
  calls: new Map(), // id -> CallView
  selectedId: null,
  offline: false,
  worker: null,
  verifications: [],
};
let entrySeq = 0; // arrival order: breaks ties between transcript lines of the same moment

function rankOf(status) {
  return Object.hasOwn(STATUS_RANK, status) ? STATUS_RANK[status] : -1;
}

function isTerminal(status) {
  return TERMINAL.has(status);
}

function viewFor(id) {
  let view = state.calls.get(id);
  if (!view) {
    view = new CallView(id);
    state.calls.set(id, view);
  }
  return view;
}

/**
 * Merge a call object into the view. `truth` (the snapshot) replaces what we had;
 * otherwise a late update never moves the status backwards (terminal stays terminal) and
 * an update without an outcome keeps the known one. Returns the status change, if any.
 */
function mergeCall(view, incoming, truth = false) {
  const call = { ...incoming };
  delete call.events;
  const old = view.data;
  if (!old || truth) {
    view.data = call;
    return !old || old.status !== call.status ? call.status : null;
  }
  const oldRank = rankOf(old.status);
  const newRank = rankOf(call.status);
  if (newRank < oldRank || (isTerminal(old.status) && call.status !== old.status)) {
    // An older picture of the call: only fill in what we did not know.
    for (const [name, value] of Object.entries(call)) {
      if (name !== "status" && old[name] == null && value != null) old[name] = value;
    }
    return null;
  }
  const merged = { ...old, ...call };
  if (call.outcome == null) merged.outcome = old.outcome ?? null;
  view.data = merged;
  return old.status !== merged.status ? merged.status : null;
}

/** Forget the oldest ended calls beyond MAX_CALLS (never the selected one). */
function pruneCalls() {
  if (state.calls.size <= MAX_CALLS) return;
  const oldest = [...state.calls.values()].sort((a, b) => a.id - b.id);
  for (const view of oldest) {
    if (state.calls.size <= MAX_CALLS) break;
    if (view.id !== state.selectedId && (!view.data || isTerminal(view.data.status))) {
      state.calls.delete(view.id);
      view.row?.parentElement?.remove();
    }
  }
}

// Transcript entries. Each has a key that is the same whether it came from the history
// (GET /calls/{id}, the snapshot) or from a live event, so a line is never shown twice:
// a turn by its itemId, a tool call by its tool-call id, anything else by its event id
// (history `id` == live `eventId`), a status change by the status (it happens once).

function turnKey(data, eventId) {
  if (typeof data.itemId === "string" && data.itemId) return `turn:${data.itemId}`;
  return eventKey(eventId);
}

function eventKey(eventId) {
  // Without an id there is nothing to match a duplicate against: keep it as a new line.
  return eventId != null ? `e:${eventId}` : `live:${++entrySeq}`;
}

function makeEntry(key, role, kind, atMs, fields) {
  // A line without a time sorts as arriving now (NaN would break the sort).
  const at = Number.isFinite(atMs) ? atMs : Date.now();
  return { key, role, kind, atMs: at, seq: ++entrySeq, node: null, ...fields };
}

/** Transcript entries for one history event ({id, at, kind, data}); unknown kinds: none. */
function historyEntries(event) {
  const data = event && typeof event.data === "object" && event.data ? event.data : {};
  const at = parseTime(event.at);
  switch (event.kind) {
    case "assistant":
      return [makeEntry(turnKey(data, event.id), "agent", "text", at, { text: data.text })];
    case "user":
      return [makeEntry(turnKey(data, event.id), "customer", "text", at, { text: data.text })];
    case "tool": {
      // In the history, data.callId is the tool call's own id.
      const entry = toolEntry(data, data.callId, event.id, at);
      const outcome = finishedOutcome(data);
      return outcome ? [entry, outcomeEntry(outcome, at)] : [entry];
    }
    case "dtmf":
      return [makeEntry(eventKey(event.id), "event", "dtmf", at, { digit: data.digit })];
    case "interruption":
      return [makeEntry(eventKey(event.id), "event", "bargeIn", at, { heardMs: data.heardMs })];
    case "status":
      return typeof data.status === "string" ? [statusEntry(data.status, at)] : [];
    default:
      return [];
  }
}

/** Transcript entries for one live event; other types: none. */
function liveEntries(message) {
  const at = parseTime(message.at);
  switch (message.type) {
    case "ava_response":
    case "user_transcript": {
      const role = message.type === "ava_response" ? "agent" : "customer";
      const key = turnKey(message, message.eventId);
      return [makeEntry(key, role, "text", at, { text: message.text })];
    }
    case "toolCall":
      // Live, the tool call's own id is toolCallId: the top-level callId is Highway's call.
      return [toolEntry(message, message.toolCallId, message.eventId, at)];
    case "bargeIn":
      return [
        makeEntry(eventKey(message.eventId), "event", "bargeIn", at, { heardMs: message.heardMs }),
      ];
    case "dtmf":
      return [makeEntry(eventKey(message.eventId), "event", "dtmf", at, { digit: message.digit })];
    case "outcome":
      return typeof message.outcome === "string" ? [outcomeEntry(message.outcome, at)] : [];
    case "clientConnected":
      return [makeEntry("connected", "event", "connected", at, {})];
    case "clientDisconnected":
      return [makeEntry("disconnected", "event", "disconnected", at, { reason: message.reason })];
    default:
      return [];
  }
}

function toolEntry(data, toolCallId, eventId, at) {
  const key =
    typeof toolCallId === "string" && toolCallId ? `tool:${toolCallId}` : eventKey(eventId);
  return makeEntry(key, "tool", "tool", at, {
    name: data.name,
    arguments: data.arguments,
    result: data.result,
  });
}

function finishedOutcome(data) {
  const result = data.result;
  if (data.name !== "finish_verification" || !result || typeof result !== "object") return null;
  return typeof result.outcome === "string" ? result.outcome : null;
}

function outcomeEntry(outcome, at) {
  return makeEntry(`outcome:${outcome}`, "event", "outcome", at, { outcome });
}

function statusEntry(status, at) {
  return makeEntry(`status:${status}`, "event", "status", at, { status });
}

/** Add entries not already there; true if any was new. */
function addEntries(view, entries) {
  let added = false;
  for (const entry of entries) {
    if (!view.entries.has(entry.key)) {
      view.entries.set(entry.key, entry);
      added = true;
    }
  }
  return added;
}

function sortedEntries(view) {
  return [...view.entries.values()].sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
}

// ---------------------------------------------------------------------------------------
// The live feed (WS /dashboard/events)

const feed = {
  socket: null,
  state: "connecting", // connecting | live | disconnected | rejected
  backoffMs: BACKOFF_FIRST_MS,
  retryAt: 0, // when the next attempt starts (ms since epoch), while disconnected
  retryTimer: 0,
  snapshotTimer: 0,
  everLive: false,
};

function connect() {
  clearTimeout(feed.retryTimer);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let socket;
  try {
    socket = new WebSocket(scheme + location.host + EVENTS_PATH);
  } catch {
    scheduleReconnect();
    return;
  }
  feed.socket = socket;
  setFeedState("connecting");
  socket.addEventListener("open", () => {
    if (socket !== feed.socket) return;
    // Browsers cannot set headers on a WebSocket: the key is the first message.
    socket.send(JSON.stringify({ type: "auth", apiKey: state.apiKey }));
    clearTimeout(feed.snapshotTimer);
    feed.snapshotTimer = setTimeout(() => {
      if (socket === feed.socket && feed.state !== "live") socket.close(4000, "no snapshot");
    }, SNAPSHOT_TIMEOUT_MS);
  });
  socket.addEventListener("message", (event) => {
    if (socket !== feed.socket) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not JSON: nothing the page understands
    }
    if (message && typeof message === "object") handleMessage(message);
  });
  socket.addEventListener("close", (event) => {
    if (socket !== feed.socket) return; // a socket we replaced on purpose
    feed.socket = null;
    clearTimeout(feed.snapshotTimer);
    if (event.code === CLOSE_POLICY_VIOLATION) {
      // The key is wrong: retrying with it would only be refused again.
      setFeedState("rejected");
      return;
    }
    scheduleReconnect();
  });
  // An error is always followed by close, which decides what to do.
}

function scheduleReconnect() {
  const delay = feed.backoffMs;
  feed.backoffMs = Math.min(feed.backoffMs * 2, BACKOFF_MAX_MS);
  feed.retryAt = Date.now() + delay;
  clearTimeout(feed.retryTimer);
  feed.retryTimer = setTimeout(connect, delay);
  setFeedState("disconnected");
}

/** Drop the current socket (if any) and connect again now, with a fresh back-off. */
function reconnectNow() {
  const old = feed.socket;
  feed.socket = null;
  clearTimeout(feed.snapshotTimer);
  if (old) old.close(1000, "reconnecting");
  feed.backoffMs = BACKOFF_FIRST_MS;
  connect();
}

function handleMessage(message) {
  if (message.type === "snapshot") {
    applySnapshot(message);
    return;
  }
  if (feed.state !== "live") return; // events before the snapshot have nothing to apply to
  const id = message.callId;
  if (typeof id !== "number") return;
  if (message.type === "callUpdated") {
    if (message.call && typeof message.call === "object") applyCallUpdated(message);
    return;
  }
  // Other events concern a call we know, or the selected one still loading its record.
  const view = state.calls.get(id);
  if (!view) return;
  if (typeof message.worker === "number") view.worker = message.worker;
  if (message.type === "outcome" && typeof message.outcome === "string" && view.data) {
    view.data.outcome = message.outcome;
    renderCallRow(view);
    if (view.id === state.selectedId) renderSelectedHead();
  }
  if (addEntries(view, liveEntries(message)) && view.id === state.selectedId) renderTranscript();
}

function applySnapshot(snapshot) {
  clearTimeout(feed.snapshotTimer);
  feed.backoffMs = BACKOFF_FIRST_MS;
  state.worker = typeof snapshot.worker === "number" ? snapshot.worker : null;
  state.offline = snapshot.offline === true;
  const calls = Array.isArray(snapshot.calls) ? snapshot.calls : [];
  const previous = state.calls;
  state.calls = new Map();
  for (const call of calls) {
    if (!call || typeof call.id !== "number") continue;
    const old = previous.get(call.id);
    const view = old || new CallView(call.id);
    state.calls.set(call.id, view);
    const oldStatus = view.data?.status;
    mergeCall(view, call, true);
    if (Array.isArray(call.events)) {
      // The snapshot's history is the whole truth about a live call.
      view.entries = new Map();
      addEntries(view, call.events.flatMap(historyEntries));
      view.history = "loaded";
    } else if (!(view.history === "loaded" && isTerminal(oldStatus))) {
      // Only an ended call's history is known not to have changed while we were away.
      view.entries = new Map();
      view.history = "none";
    }
  }
  // Keep the selected call even if it is older than the snapshot's 50.
  const selected = previous.get(state.selectedId);
  if (selected && !state.calls.has(selected.id)) {
    state.calls.set(selected.id, selected);
    if (!isTerminal(selected.data?.status)) selected.history = "none";
  }
  for (const view of previous.values()) {
    if (!state.calls.has(view.id)) view.row?.parentElement?.remove();
  }
  feed.everLive = true;
  setFeedState("live");
  renderOffline();
  if (state.selectedId == null) {
    // Nothing chosen yet: follow the newest call that is under way, if any.
    const live = [...state.calls.values()]
      .filter((view) => view.data && !isTerminal(view.data.status))
      .sort((a, b) => b.id - a.id)[0];
    if (live) {
      select(live.id);
      return;
    }
  } else {
    ensureHistory(viewFor(state.selectedId));
  }
  renderAll();
}

function applyCallUpdated(message) {
  const id = message.callId;
  const known = state.calls.get(id);
  const isNew = !known || !known.data;
  const view = viewFor(id);
  if (typeof message.worker === "number") view.worker = message.worker;
  if (isNew && view.history === "none") {
    // Seen from its creation on (we are subscribed): the live events are its whole history.
    view.history = isTerminal(message.call.status) ? "none" : "loaded";
  }
  const changed = mergeCall(view, message.call);
  if (changed) addEntries(view, [statusEntry(changed, parseTime(message.at))]);
  pruneCalls();
  // A new call may come with a new verification (a simulated call makes its own), and
  // moves its verification along: refresh the picker, unless it is in use.
  if (isNew || (changed && isTerminal(changed))) refreshVerificationsSoon();
  if (isNew && state.selectedId == null && !isTerminal(view.data.status)) {
    select(id); // a call started and nothing was selected: follow it
    return;
  }
  renderCallList();
  if (id === state.selectedId) {
    renderSelectedHead();
    renderTranscript();
  }
}

// ---------------------------------------------------------------------------------------
// REST

class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (/[^\x20-\x7e]/.test(state.apiKey)) {
    // fetch() would refuse such a header with an unhelpful TypeError.
    throw new ApiError("The API key holds characters that cannot be sent; check it", 0, null);
  }
  if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    const text = error instanceof TypeError ? "Highway could not be reached" : String(error);
    throw new ApiError(text, 0, null);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const text = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
    throw new ApiError(text, response.status, data);
  }
  return data;
}

/** Fetch the call's record and history if the page does not hold it yet. */
function ensureHistory(view) {
  if (view.history === "none" || view.history === "error") loadHistory(view);
}

async function loadHistory(view) {
  view.history = "loading";
  view.historyError = null;
  try {
    const call = await api(`/calls/${view.id}`);
    if (call && typeof call === "object") {
      mergeCall(view, call);
      const events = Array.isArray(call.events) ? call.events : [];
      addEntries(view, events.flatMap(historyEntries));
      if (call.outcome) addEntries(view, [outcomeEntry(call.outcome, parseTime(call.endedAt))]);
    }
    view.history = "loaded";
  } catch (error) {
    view.history = "error";
    view.historyError = error.status === 404 ? `Call #${view.id} was not found.` : error.message;
  }
  if (state.calls.get(view.id) !== view) return; // forgotten meanwhile (a new snapshot)
  renderCallList();
  if (view.id === state.selectedId) {
    renderSelectedHead();
    renderTranscript();
  }
}

let manualByDefault = false; // "Enter an id…" was chosen for the user, not by them

async function loadVerifications() {
  el.verificationNote.hidden = true;
  let list = [];
  let problem = null;
  try {
    const data = await api("/verifications?limit=50");
    list = Array.isArray(data?.verifications) ? data.verifications : [];
  } catch (error) {
    problem = error.message;
  }
  state.verifications = list;
  const select = el.callVerification;
  const chosen = select.value;
  const options = list
    .filter((v) => v && typeof v.id === "number")
    .map((v) => {
      const name = v.customerName || "unnamed";
      const purpose = v.purpose ? ` — ${truncate(v.purpose, 40)}` : "";
      const how = v.outcome ? `${v.status}, ${v.outcome}` : v.status;
      return new Option(`#${v.id} ${name}${purpose} (${how})`, String(v.id));
    });
  let prompt = "Choose a verification…";
  if (problem) prompt = "Verifications unavailable";
  else if (!list.length) prompt = "No verifications yet";
  const first = new Option(prompt, "");
  select.replaceChildren(first, ...options, new Option("Enter an id…", "manual"));
  // Keep the user's choice across reloads; with no list to pick from, the id field is the
  // way (until a list comes: then the picker is back).
  const keep = chosen && !(chosen === "manual" && manualByDefault);
  manualByDefault = false;
  if (keep && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
  else if (problem || !list.length) {
    select.value = "manual";
    manualByDefault = true;
  } else select.value = "";
  if (problem) {
    el.verificationNote.textContent = `Could not load verifications: ${problem}`;
    el.verificationNote.hidden = false;
  }
  renderManualField();
}

let verificationsTimer = 0;

function refreshVerificationsSoon() {
  clearTimeout(verificationsTimer);
  verificationsTimer = setTimeout(() => {
    if (document.activeElement === el.callVerification) refreshVerificationsSoon();
    else loadVerifications();
  }, 1000);
}

function renderManualField() {
  el.manualField.hidden = el.callVerification.value !== "manual";
}

// ---------------------------------------------------------------------------------------
// Rendering

function renderAll() {
  renderConnection();
  renderOffline();
  renderCallList();
  renderSelectedHead();
  renderTranscript();
}

function setFeedState(next) {
  feed.state = next;
  renderConnection();
}

function renderConnection() {
  const box = el.connection;
  box.dataset.state = feed.state;
  let text;
  switch (feed.state) {
    case "live":
      text = state.worker != null ? `Live · worker ${state.worker}` : "Live";
      break;
    case "connecting":
      text = feed.everLive ? "Reconnecting…" : "Connecting…";
      break;
    case "rejected":
      text = "API key rejected";
      break;
    default: {
      const seconds = Math.max(1, Math.ceil((feed.retryAt - Date.now()) / 1000));
      text = `Disconnected · retrying in ${seconds} s`;
    }
  }
  if (el.connectionText.textContent !== text) el.connectionText.textContent = text;
  box.title = feed.state === "rejected" ? "Enter the right API key to connect" : "";
  el.apiKey.classList.toggle("invalid", feed.state === "rejected");
  el.apiKey.setAttribute("aria-invalid", feed.state === "rejected" ? "true" : "false");
  // The list is only as fresh as the feed.
  el.layout.classList.toggle("stale", feed.state !== "live");
}

function renderOffline() {
  el.simulate.hidden = !state.offline;
  el.offlineTag.hidden = !state.offline;
}

function renderCallList() {
  const views = [...state.calls.values()].filter((v) => v.data).sort((a, b) => b.id - a.id);
  const items = views.map((view) => {
    renderCallRow(view);
    return view.row.parentElement;
  });
  syncChildren(el.callList, items);
  el.callListEmpty.hidden = views.length > 0;
  const live = views.filter((v) => !isTerminal(v.data.status)).length;
  el.callCount.textContent = views.length ? `${views.length}${live ? ` · ${live} live` : ""}` : "";
  document.title = live ? `(${live}) Highway · live calls` : "Highway · live calls";
}

/** Make `parent`'s children exactly `nodes`, moving only those out of place (so a focused
 * row keeps its focus when a new call is added above it). */
function syncChildren(parent, nodes) {
  nodes.forEach((node, index) => {
    const current = parent.children[index];
    if (current !== node) parent.insertBefore(node, current || null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

function renderCallRow(view) {
  if (!view.data) return;
  if (!view.row) view.row = buildCallRow(view.id);
  const row = view.row;
  const call = view.data;
  const parts = row.parts;
  setBadge(parts.status, call.status);
  setText(parts.title, `#${call.id}${call.direction ? ` · ${call.direction}` : ""}`);
  setText(parts.duration, formatDuration(call));
  setText(parts.numbers, `to ${maskNumber(call.to)} · from ${maskNumber(call.from)}`);
  const verification = call.verificationId;
  setText(parts.verification, verification != null ? `verification #${verification}` : "no verification");
  const ending = call.endReason || (isTerminal(call.status) && call.error ? "error" : "");
  setText(parts.reason, ending);
  parts.reason.hidden = !ending;
  setOutcome(parts.outcome, call.outcome, call.status, false);
  const selected = view.id === state.selectedId;
  row.classList.toggle("selected", selected);
  row.setAttribute("aria-pressed", selected ? "true" : "false");
}

function buildCallRow(id) {
  const item = document.createElement("li");
  const row = document.createElement("button");
  row.type = "button";
  row.className = "call-row";
  row.dataset.testid = "call-row";
  row.dataset.callId = String(id);
  const top = span("row-top");
  const status = span("badge");
  status.dataset.testid = "call-status";
  const title = span("row-title");
  const duration = span("row-duration");
  top.append(status, title, duration);
  const meta = span("row-meta");
  const numbers = span("row-numbers");
  const verification = span("row-verification");
  meta.append(numbers, verification);
  const end = span("row-end");
  const reason = span("row-reason");
  const outcome = span("outcome");
  end.append(reason, outcome);
  row.append(top, meta, end);
  row.parts = { status, title, duration, numbers, verification, reason, outcome };
  item.append(row);
  return row;
}

function renderSelectedHead() {
  const view = state.calls.get(state.selectedId);
  const call = view?.data;
  const shown = state.selectedId != null;
  el.selectedStatus.hidden = !call;
  el.selectedOutcome.hidden = !call;
  el.selectedMeta.hidden = !call;
  if (!shown) {
    setText(el.selectedTitle, "No call selected");
    el.selectedError.hidden = true;
    return;
  }
  setText(el.selectedTitle, `Call #${state.selectedId}`);
  if (!call) {
    el.selectedError.hidden = true;
    return;
  }
  setBadge(el.selectedStatus, call.status);
  setOutcome(el.selectedOutcome, call.outcome, call.status, true);
  const m = el.meta;
  setText(m.direction, call.direction || "—");
  setText(m.verification, call.verificationId != null ? `#${call.verificationId}` : "—");
  setText(m.to, maskNumber(call.to));
  setText(m.from, maskNumber(call.from));
  setText(m.started, formatClock(parseTime(call.createdAt)) || "—");
  setText(m.duration, formatDuration(call));
  setText(m.endReason, call.endReason || "—");
  setText(m.answeredBy, call.answeredBy || "—");
  setText(el.selectedError, call.error ? `Error: ${call.error}` : "");
  el.selectedError.hidden = !call.error;
}

/** Render the selected call's transcript; `fresh`: a newly selected call, start at its end. */
function renderTranscript(fresh = false) {
  const view = state.calls.get(state.selectedId);
  const scroller = el.scroller;
  const wasAtBottom = fresh || isNearBottom(scroller);
  const before = el.transcript.children.length;
  const nodes = view ? sortedEntries(view).map(lineNode) : [];
  syncChildren(el.transcript, nodes);
  let note = "";
  if (!view) note = "Select a call to see its transcript.";
  else if (view.history === "loading") note = "Loading the transcript…";
  else if (view.history === "error") note = `Could not load the transcript: ${view.historyError}`;
  else if (!nodes.length && view.data && isTerminal(view.data.status)) note = "No transcript for this call.";
  else if (!nodes.length) note = "Waiting for the conversation…";
  setText(el.transcriptNote, note);
  el.transcriptNote.hidden = !note;
  el.transcriptNote.classList.toggle("error", view?.history === "error");
  if (wasAtBottom) {
    scroller.scrollTop = scroller.scrollHeight;
    el.jumpLatest.hidden = true;
  } else if (nodes.length > before) {
    el.jumpLatest.hidden = false; // the user is reading further up: offer, don't pull
  }
}

function isNearBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight <= NEAR_BOTTOM_PX;
}

function lineNode(entry) {
  if (!entry.node) entry.node = buildLine(entry);
  return entry.node;
}

function buildLine(entry) {
  const line = document.createElement("li");
  line.dataset.testid = "transcript-line";
  line.dataset.role = entry.role;
  line.className = `line line-${entry.role}`;
  const time = document.createElement("time");
  time.className = "line-time";
  if (Number.isFinite(entry.atMs)) {
    time.dateTime = new Date(entry.atMs).toISOString();
    time.textContent = formatClock(entry.atMs);
  }
  if (entry.role === "agent" || entry.role === "customer") {
    const bubble = span("bubble");
    const who = span("who");
    who.textContent = entry.role === "agent" ? "Agent" : "Customer";
    const text = document.createElement("p");
    text.className = "line-text";
    const said = typeof entry.text === "string" && entry.text.trim();
    text.textContent = said ? entry.text : "(no transcript)";
    text.classList.toggle("muted", !said);
    bubble.append(who, time, text);
    line.append(bubble);
    return line;
  }
  if (entry.role === "tool") {
    const card = span("tool-card");
    const name = span("tool-name");
    name.textContent = `⚙ ${typeof entry.name === "string" ? entry.name : "tool"}`;
    const args = document.createElement("code");
    args.className = "tool-args";
    args.textContent = `(${compact(entry.arguments)})`;
    const arrow = span("tool-arrow");
    arrow.textContent = "→";
    const result = document.createElement("code");
    result.className = "tool-result";
    result.textContent = compact(entry.result);
    const failed = entry.result && typeof entry.result === "object" && "error" in entry.result;
    result.classList.toggle("tool-error", Boolean(failed));
    card.append(name, args, arrow, result, time);
    line.append(card);
    return line;
  }
  const note = span("event-text");
  note.textContent = describeEvent(entry);
  line.classList.add(`event-${entry.kind}`);
  if (entry.kind === "outcome") {
    const badge = span("outcome");
    setOutcome(badge, entry.outcome, "completed", true);
    line.append(note, badge, time);
  } else {
    line.append(note, time);
  }
  return line;
}

function describeEvent(entry) {
  switch (entry.kind) {
    case "bargeIn": {
      const heardMs = entry.heardMs;
      const heard = Number.isFinite(heardMs) ? ` after ${(heardMs / 1000).toFixed(1)} s of its reply` : "";
      return `Barge-in: the customer spoke over the agent${heard}`;
    }
    case "dtmf":
      return `Keypad: ${entry.digit ?? "?"}`;
    case "status":
      return STATUS_LINE[entry.status] || `Status: ${entry.status}`;
    case "outcome":
      return "Verification outcome";
    case "connected":
      return "Media stream connected";
    case "disconnected":
      return entry.reason ? `Media stream closed: ${entry.reason}` : "Media stream closed";
    default:
      return entry.kind;
  }
}

function setBadge(node, status) {
  const label = STATUS_LABEL[status] || String(status ?? "unknown");
  setText(node, label);
  node.dataset.status = String(status ?? "");
  node.title = String(status ?? "");
  node.className = `badge badge-${badgeTone(status)}`;
}

function badgeTone(status) {
  if (status === ANSWERED) return "live";
  if (status === "ringing") return "ringing";
  if (status === "completed") return "done";
  if (status === "failed") return "failed";
  if (isTerminal(status)) return "missed";
  return "pending";
}

/** The outcome badge: the outcome, or what stands in for it (`always`: never hide). */
function setOutcome(node, outcome, status, always) {
  const known = typeof outcome === "string" && outcome;
  let text = known ? outcome : "";
  if (!known && always) text = isTerminal(status) ? "no outcome" : "outcome pending";
  setText(node, text);
  node.dataset.outcome = known ? outcome : "";
  node.className = `outcome outcome-${known ? outcomeTone(outcome) : "none"}`;
  node.hidden = !text;
}

function outcomeTone(outcome) {
  if (outcome === "verified") return "good";
  if (outcome === "mismatch") return "bad";
  if (outcome === "incomplete") return "warn";
  return "neutral";
}

// ---------------------------------------------------------------------------------------
// Formatting

function span(className) {
  const node = document.createElement("span");
  node.className = className;
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Only the last four digits of a phone number: "•••0123". */
function maskNumber(number) {
  if (typeof number !== "string" || !number) return "—";
  const digits = number.replace(/\D/g, "");
  if (!digits) return "•••";
  return `•••${digits.slice(-4)}`;
}

/** ISO time -> ms since epoch (NaN if absent). Python's microseconds are cut to ms first. */
function parseTime(text) {
  if (typeof text !== "string") return Number.NaN;
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

function formatClock(ms) {
  if (!Number.isFinite(ms)) return "";
  const parts = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
  return new Date(ms).toLocaleTimeString([], parts);
}

/** Live calls tick from answeredAt; ended ones show their stored duration. */
function formatDuration(call) {
  let seconds = null;
  const answered = parseTime(call.answeredAt);
  if (call.status === ANSWERED) {
    // Clamped: the browser's clock may be a little behind the server's.
    if (Number.isFinite(answered)) seconds = Math.max(0, Math.floor((Date.now() - answered) / 1000));
  } else if (typeof call.durationSeconds === "number") {
    seconds = call.durationSeconds;
  } else if (isTerminal(call.status)) {
    const ended = parseTime(call.endedAt);
    if (Number.isFinite(answered) && Number.isFinite(ended)) {
      seconds = Math.max(0, Math.round((ended - answered) / 1000));
    }
  }
  if (seconds == null) return "—";
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** A tool's arguments or result on one line: `field: "dob", value: "1815-12-10"`. */
function compact(value) {
  if (typeof value === "string") {
    // The model's raw arguments arrive as JSON text when they could not be parsed.
    try {
      value = JSON.parse(value);
    } catch {
      return truncate(value, 300);
    }
  }
  if (value == null) return "";
  if (typeof value === "object" && !Array.isArray(value)) {
    const pairs = Object.entries(value).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    return truncate(pairs.join(", "), 300);
  }
  return truncate(JSON.stringify(value), 300);
}

function truncate(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// ---------------------------------------------------------------------------------------
// Actions

function select(id, { byUser = false } = {}) {
  const changed = id !== state.selectedId;
  state.selectedId = id;
  const view = viewFor(id);
  if (changed) history.replaceState(null, "", `#call-${id}`);
  ensureHistory(view);
  renderCallList();
  renderSelectedHead();
  if (changed) el.transcript.replaceChildren();
  renderTranscript(changed);
  if (byUser && narrowScreen.matches) {
    // Stacked layout: the transcript is below the list, out of sight.
    el.detailCard.scrollIntoView({ block: "start", behavior: "smooth" });
  }
}

function readStoredKey() {
  try {
    return localStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return ""; // storage disabled: the key lasts as long as the page
  }
}

function storeKey(key) {
  try {
    if (key) localStorage.setItem(STORAGE_KEY, key);
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage disabled; see readStoredKey
  }
}

/** A new key: store it, reconnect with it, reload what it may have been refused. */
function applyKey(key) {
  if (key === state.apiKey && feed.state !== "rejected") return;
  state.apiKey = key;
  storeKey(key);
  reconnectNow();
  loadVerifications();
  const view = state.calls.get(state.selectedId);
  if (view?.history === "error") ensureHistory(view);
}

let keyTimer = 0;

function onKeyInput() {
  // Typing: apply once the typing pauses; Enter or leaving the field applies at once.
  clearTimeout(keyTimer);
  keyTimer = setTimeout(() => applyKey(el.apiKey.value.trim()), 600);
}

function onKeyCommit(event) {
  event?.preventDefault();
  clearTimeout(keyTimer);
  applyKey(el.apiKey.value.trim());
}

function showResult(node, text, ok) {
  node.textContent = text;
  node.classList.toggle("ok", ok);
  node.classList.toggle("error", !ok);
  node.hidden = false;
}

async function onCallSubmit(event) {
  event.preventDefault();
  // Spaces, dashes, dots and brackets are how people write numbers; E.164 has none.
  const to = el.callTo.value.replace(/[\s().-]/g, "");
  const body = { to };
  const picked = el.callVerification.value;
  const raw = picked === "manual" ? el.manualVerification.value.trim() : picked;
  if (raw) body.verification = /^\d+$/.test(raw) ? Number(raw) : raw;
  el.callSubmit.disabled = true;
  el.callFormResult.hidden = true;
  try {
    const data = await api("/call-customer", { method: "POST", body });
    showResult(el.callFormResult, data?.message || "Call initiated", true);
    if (typeof data?.callId === "number") select(data.callId);
    loadVerifications();
  } catch (error) {
    showResult(el.callFormResult, error.message, false);
    // A call Twilio refused is still recorded: show it.
    if (typeof error.body?.callId === "number") select(error.body.callId);
  } finally {
    el.callSubmit.disabled = false;
  }
}

function onVerificationChange() {
  manualByDefault = false;
  renderManualField();
  const chosen = state.verifications.find((v) => String(v.id) === el.callVerification.value);
  // Fill in the customer's number, unless one was typed that is not the last filled one.
  if (chosen?.phone && (!el.callTo.value || el.callTo.value === el.callTo.dataset.filled)) {
    el.callTo.value = chosen.phone;
    el.callTo.dataset.filled = chosen.phone;
  }
  if (el.callVerification.value === "manual") el.manualVerification.focus();
}

async function onSimulate() {
  el.simulate.disabled = true;
  el.simulateResult.hidden = true;
  try {
    const data = await api("/dashboard/simulate-call", { method: "POST" });
    if (typeof data?.callId === "number") select(data.callId);
    showResult(el.simulateResult, data?.message || "Simulated call started", true);
  } catch (error) {
    showResult(el.simulateResult, error.message, false);
  } finally {
    el.simulate.disabled = false;
  }
}

function onCallListClick(event) {
  const row = event.target.closest(".call-row");
  if (!row) return;
  const id = Number(row.dataset.callId);
  if (Number.isInteger(id)) select(id, { byUser: true });
}

/** Once a second: the durations of answered calls, and the reconnect countdown. */
function tick() {
  for (const view of state.calls.values()) {
    if (view.data?.status === ANSWERED && view.row) {
      setText(view.row.parts.duration, formatDuration(view.data));
    }
  }
  const selected = state.calls.get(state.selectedId)?.data;
  if (selected) setText(el.meta.duration, formatDuration(selected));
  if (feed.state === "disconnected") renderConnection();
}

function start() {
  el.apiKey.value = state.apiKey;
  el.keyForm.addEventListener("submit", onKeyCommit);
  el.apiKey.addEventListener("input", onKeyInput);
  el.apiKey.addEventListener("change", onKeyCommit);
  el.callForm.addEventListener("submit", onCallSubmit);
  el.callVerification.addEventListener("change", onVerificationChange);
  el.reloadVerifications.addEventListener("click", () => loadVerifications());
  el.simulate.addEventListener("click", onSimulate);
  el.callList.addEventListener("click", onCallListClick);
  el.scroller.addEventListener("scroll", () => {
    if (isNearBottom(el.scroller)) el.jumpLatest.hidden = true;
  });
  el.jumpLatest.addEventListener("click", () => {
    el.scroller.scrollTop = el.scroller.scrollHeight;
    el.jumpLatest.hidden = true;
  });
  // Back online: no need to wait out the back-off.
  window.addEventListener("online", () => {
    if (feed.state === "disconnected") reconnectNow();
  });
  const wanted = /^#call-(\d+)$/.exec(location.hash);
  if (wanted) select(Number(wanted[1]));
  renderAll();
  loadVerifications();
  connect();
  setInterval(tick, 1000);
}

start();
