// vigil review console. Everything it shows comes from the /v1 API, called with the token the
// reviewer signed in with; it has no access of its own. Text from the server, content above
// all, is only ever set with textContent, never parsed as HTML.

const TOKEN_KEY = "vigil.console.token";
// While a record is open, how often the console asks the API whether its grant still stands
// (GET /v1/access-requests/{id}: metadata, audited as grant.view, never a content read).
const GRANT_POLL_MS = 2000;
const OUTCOMES = {
  abuse_confirmed: "Abuse confirmed",
  false_positive: "False positive",
  needs_escalation: "Needs escalation",
};
const GRANT_DURATIONS = [
  [900, "15 minutes"],
  [3600, "1 hour"],
  [14400, "4 hours"],
  [28800, "8 hours"],
];

const $ = (id) => document.getElementById(id);

/** Builds an element: `el("td", {class: "x"}, "text", child)`. Strings become text nodes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// Time: the server's clock decides expiry and purges; keep an offset to it.

let clockOffsetMs = 0;
function syncClock(serverNow) {
  if (serverNow) clockOffsetMs = Date.parse(serverNow) - Date.now();
}
function serverNow() {
  return Date.now() + clockOffsetMs;
}
function until(iso) {
  return Date.parse(iso) - serverNow();
}
/** "2 d 4 h", "3 h 12 min", "4 min 05 s", or "now". */
function span(ms) {
  if (ms <= 0) return "now";
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  return `${m} min ${String(sec).padStart(2, "0")} s`;
}
function stamp(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "";
}

// ---------------------------------------------------------------------------------------------
// The API.

class Refused extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const REFUSAL_TITLES = {
  eea_rule: "EEA rule",
  grant_expired: "Grant expired",
  grant_revoked: "Grant revoked",
  grant_denied: "Access denied",
  grant_pending: "Waiting for approval",
  no_grant: "No grant",
  content_logging_off: "Content logging is off",
  no_workstation: "Not a secure workstation",
  self_approval: "Not your own request",
  wrong_role: "Not allowed for your role",
  not_available: "Record not available",
  unauthenticated: "Signed out",
  rate_limited: "Slow down",
  already_decided: "Already decided",
  not_active: "Grant not active",
  grant_unconfirmed: "Grant not confirmed",
  grant_too_long: "Grant too long",
  audit_unavailable: "Audit log unavailable",
  unknown_case: "Unknown case",
  invalid_input: "Invalid input",
};

/**
 * Calls the API on this page's own origin with the session's token (or `token`, to try one
 * before it becomes the session's).
 */
async function api(method, path, body, token = sessionStorage.getItem(TOKEN_KEY)) {
  const headers = { Authorization: `Bearer ${token || ""}` };
  // The Fetch standard counts a TLS client certificate as a credential: under "omit" a browser
  // may withhold the workstation certificate (Chromium does with its OmitCorsClientCert
  // feature, which tests/console.rs turns on), and the workstation listener then refuses the
  // handshake. "same-origin" presents it; vigil sets no cookies, so nothing else rides along.
  // The console only ever talks to its own origin ("same-origin" mode; connect-src 'self').
  const init = { method, headers, cache: "no-store", credentials: "same-origin", mode: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Refused(0, "unreachable", "the vigil API did not answer; is `vigil serve` running?");
  }
  const json = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = json.error || {};
    throw new Refused(response.status, error.code || `http_${response.status}`,
      error.message || response.statusText);
  }
  return json;
}

// ---------------------------------------------------------------------------------------------
// Notices: refusals are said plainly, with the API's code.

function showRefusal(error, context) {
  if (!(error instanceof Refused)) throw error;
  if (error.code === "unauthenticated" && session.me) {
    signOut("Your token is no longer valid. Sign in again.");
    return;
  }
  refusalNotice(error, context);
}
/** Shows a refusal, whatever it is (a token being tried is refused without signing out). */
function refusalNotice(error, context) {
  if (!(error instanceof Refused)) throw error;
  const title = REFUSAL_TITLES[error.code] || "Refused";
  const notice = $("notice");
  notice.replaceChildren(
    el("strong", {}, `${title}${context ? ` (${context})` : ""}: `),
    `${error.message}.`,
    " ",
    el("code", { class: "code" }, error.code),
    el("button", { type: "button", class: "link dismiss", onclick: clearNotice }, "Dismiss"),
  );
  notice.dataset.code = error.code;
  notice.className = "notice refusal";
  showNotice(notice);
}
function showInfo(text) {
  const notice = $("notice");
  notice.replaceChildren(text,
    el("button", { type: "button", class: "link dismiss", onclick: clearNotice }, "Dismiss"));
  delete notice.dataset.code;
  notice.className = "notice info";
  showNotice(notice);
}
/** Shows the notice as belonging to the current screen: navigating elsewhere clears it. */
function showNotice(notice) {
  notice.dataset.route = location.hash;
  notice.hidden = false;
}
function clearNotice() {
  const notice = $("notice");
  notice.hidden = true;
  // Emptied, not only hidden: a pending offer's buttons go, and the link's token with them.
  notice.replaceChildren();
  delete notice.dataset.code;
  delete notice.dataset.prompt;
  linkOffer.link = null;
}
function announce(text) {
  $("status").textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Session.

const session = { me: null };

/**
 * Signs in with `token`: it becomes the session's only once the API accepted it for a reviewer
 * or manager, so a refused token never ends the session in force.
 */
async function signIn(token) {
  token = token.trim();
  try {
    const me = await api("GET", "/v1/me", undefined, token);
    if (me.role !== "reviewer" && me.role !== "manager") {
      refusalNotice(new Refused(403, "wrong_role",
        `the console is for reviewers and managers; ${me.name} is ${article(me.role)} ${me.role}`));
      return false;
    }
    // Another identity never inherits what the last one had open.
    closeRecord();
    sessionStorage.setItem(TOKEN_KEY, token);
    session.me = me;
    syncClock(me.now);
    renderWhoami();
    return true;
  } catch (e) {
    refusalNotice(e, "sign-in");
    return false;
  }
}

// A sign-in link carries a one-time sign-in code (`#code=`, as `vigil demo` prints them) or a
// token (`#token=`) in the fragment, which is never sent to a server. It is taken out of the
// address bar and history at once, and it never silently replaces a session in force: the
// reviewer is asked first, and a code is exchanged for a token only once they agree. Tokens
// and codes are never logged.

/** The link being offered, until the reviewer decides (cleared with the notice). */
const linkOffer = { link: null };

/**
 * Takes a `#code=` or `#token=` out of the URL (history too); returns `{code}` or `{token}`,
 * or null when there is none.
 */
function takeLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const code = params.get("code"), token = params.get("token");
  if (code === null && token === null) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}${lastRoute || "#/cases"}`);
  return code !== null ? { code: code.trim() } : { token: token.trim() };
}

/** The token a link stands for: its own, or a fresh one its code is exchanged for (once). */
async function linkToken(link) {
  if (link.token !== undefined) return link.token;
  try {
    const issued = await api("POST", "/v1/sign-in", { code: link.code }, "");
    return issued.token;
  } catch (e) {
    refusalNotice(e, "sign-in");
    return null;
  }
}

/**
 * A link: signs in with it when no session is in force; otherwise asks whether to switch.
 * Returns true when the route should be rendered again (signed in by it).
 */
async function offerLink(link) {
  if (!link || !(link.code || link.token)) return false;
  if (!session.me) {
    // Nothing to replace. A refusal of a stale session shown earlier no longer applies.
    const token = await linkToken(link);
    const signedIn = token !== null && await signIn(token);
    if (signedIn) clearNotice();
    return signedIn;
  }
  if (link.token === sessionStorage.getItem(TOKEN_KEY)) return false;
  const current = session.me.name;
  const notice = $("notice");
  clearNotice();
  linkOffer.link = link;
  const keep = () => {
    clearNotice();
    showInfo(`Still signed in as ${current}; the link was not used.`);
  };
  const change = async () => {
    const offered = linkOffer.link;
    clearNotice();
    const token = offered && await linkToken(offered);
    if (token && await signIn(token)) {
      showInfo(`Signed in as ${session.me.name} from the link.`);
      route();
    }
  };
  notice.replaceChildren(
    el("strong", {}, "Sign-in link: "),
    `the link you opened signs in with another session. You are signed in as ${current}; `,
    "switching signs you in with the link instead. ",
    el("span", { class: "actions" },
      el("button", { type: "button", class: "primary", onclick: change }, "Switch to the link's session"),
      el("button", { type: "button", onclick: keep }, `Stay signed in as ${current}`)),
  );
  notice.dataset.prompt = "token-link";
  notice.className = "notice prompt";
  showNotice(notice);
  return false;
}

function article(word) {
  return /^[aeiou]/.test(word) ? "an" : "a";
}

function signOut(message) {
  closeRecord();
  sessionStorage.removeItem(TOKEN_KEY);
  session.me = null;
  $("whoami").hidden = true;
  $("tabs").hidden = true;
  location.hash = "#/signin";
  if (message) showInfo(message); else clearNotice();
  route();
}

function renderWhoami() {
  const me = session.me;
  $("who-name").textContent = me.name;
  $("who-role").textContent = me.role;
  $("who-region").textContent = me.region === "eea" ? "EEA" : "outside the EEA";
  const ws = $("who-workstation");
  ws.textContent = me.workstation ? `workstation ${me.workstation}` : "no workstation: content unavailable";
  ws.className = me.workstation ? "pill ok" : "pill warn";
  $("whoami").hidden = false;
  $("tabs").hidden = false;
  for (const node of document.querySelectorAll("[data-manager-only]")) {
    node.hidden = me.role !== "manager";
  }
}

// ---------------------------------------------------------------------------------------------
// Routing: #/cases, #/cases/CASE, #/requests, #/approvals, #/signin.

const VIEWS = ["signin", "cases", "case", "requests", "approvals"];

function show(view) {
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const tab of document.querySelectorAll("#tabs a")) {
    const current = tab.dataset.tab === view || (view === "case" && tab.dataset.tab === "cases");
    if (current) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
}

/** The last route rendered: where a sign-in link's fragment is replaced back to. */
let lastRoute = null;

async function route() {
  const hash = location.hash || "#/cases";
  lastRoute = hash;
  if (!session.me) {
    show("signin");
    $("token").focus();
    return;
  }
  closeRecord();
  const [, section, id] = hash.split("/");
  try {
    if (section === "cases" && id) await renderCase(decodeURIComponent(id));
    else if (section === "requests") await renderRequests();
    else if (section === "approvals" && session.me.role === "manager") await renderApprovals();
    else await renderCases();
  } catch (e) {
    showRefusal(e);
  }
  if (session.me?.role === "manager") refreshPendingCount();
}

// ---------------------------------------------------------------------------------------------
// The case queue.

function subjectOf(c) {
  return c.subject.kind === "end_user" ? `end user ${c.subject.end_user}` : "whole resource";
}

function llmSummary(review) {
  if (!review || review.reviewed === 0) return `not reviewed yet (${review ? review.sampled : 0} sampled)`;
  const parts = [`${review.reviewed}/${review.sampled} reviewed`, `${review.violations} violation${review.violations === 1 ? "" : "s"}`];
  if (review.escalated) parts.push(`${review.escalated} escalated`);
  return parts.join(" · ");
}

/** The latest decision per target (the case, or one record), newest first. */
function currentDecisions(decisions) {
  const latest = new Map();
  for (const d of decisions) latest.set(d.request_id || "", d);
  return [...latest.values()].sort((a, b) => b.decided_at.localeCompare(a.decided_at));
}

function decisionSummary(decisions) {
  const current = currentDecisions(decisions);
  if (current.length === 0) return el("span", { class: "muted" }, "none yet");
  return el("ul", { class: "tags" }, current.map((d) =>
    el("li", { class: `tag ${d.outcome}` },
      `${OUTCOMES[d.outcome]}${d.request_id ? ` (${shortId(d.request_id)})` : " (case)"}`)));
}

function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 12)}…` : id;
}

async function renderCases() {
  show("cases");
  const data = await api("GET", "/v1/cases");
  syncClock(data.now);
  const rows = data.cases.map((c) => {
    const purge = until(c.purge_due_at);
    return el("tr", { "data-case": c.case_id },
      el("th", { scope: "row", "data-label": "Case" },
        el("a", { href: `#/cases/${encodeURIComponent(c.case_id)}` }, c.case_id),
        el("div", { class: "muted" }, subjectOf(c), " · opened ", stamp(c.opened_at))),
      el("td", { "data-label": "Resource" }, c.resource_id,
        el("div", { class: "muted" }, c.geography, c.eea ? " · EEA" : "",
          c.content_logging ? "" : " · content logging off")),
      el("td", { "data-label": "Score", class: "num" }, c.scores.abuse.toFixed(2)),
      el("td", { "data-label": "Categories" },
        el("ul", { class: "tags" }, c.categories.map((cat) => el("li", { class: "tag" }, cat)))),
      el("td", { "data-label": "LLM review" }, llmSummary(c.llm_review)),
      el("td", { "data-label": "Decisions" }, decisionSummary(c.decisions)),
      el("td", { "data-label": "Purged in", class: purge < 3 * 86400e3 ? "soon" : "",
        title: `due for the retention purge at ${stamp(c.purge_due_at)}` }, span(purge)));
  });
  $("case-table").tBodies[0].replaceChildren(...rows);
  $("cases-empty").hidden = rows.length > 0;
  $("case-table").hidden = rows.length === 0;
  announce(`${rows.length} cases`);
}

// ---------------------------------------------------------------------------------------------
// One case: metadata, access, the flagged records, decisions.

const caseState = { id: null, view: null };

function grantLine(access, c) {
  switch (access.status) {
    case "active":
      return [el("strong", { class: "ok" }, "Approved"), ` until ${stamp(access.expires_at)} (`,
        el("span", { "data-countdown": access.expires_at }, span(until(access.expires_at))), " left)."];
    case "grant_pending":
      return [el("strong", {}, "Pending"), ": waiting for a manager's decision."];
    case "grant_denied":
      return [el("strong", { class: "bad" }, "Denied"), ". You may ask again with a better reason."];
    case "grant_expired":
      return [el("strong", { class: "bad" }, "Expired"), ". Ask again to read more."];
    case "grant_revoked":
      return [el("strong", { class: "bad" }, "Revoked"), ". Ask again to read more."];
    default:
      if (!c.content_logging) return ["This resource has content logging off: there is no content to grant."];
      if (c.eea && session.me.region !== "eea") return ["This resource's data is in the EEA; only EEA reviewers may ask for access."];
      return ["You hold no grant for this case."];
  }
}

async function renderCase(id) {
  show("case");
  const c = await api("GET", `/v1/cases/${encodeURIComponent(id)}`);
  syncClock(c.now);
  caseState.id = id;
  caseState.view = c;
  $("case-title").textContent = `Case ${c.case_id}`;
  const meta = [
    ["Resource", `${c.resource_id} (${c.geography}${c.eea ? ", EEA" : ""})`],
    ["Subject", subjectOf(c)],
    ["Abuse score", c.scores.abuse.toFixed(2)],
    ["Categories", c.categories.join(", ") || "none"],
    ["Opened", stamp(c.opened_at)],
    ["Window", `${stamp(c.window.start)} to ${stamp(c.window.end)}`],
    ["Signals", Object.entries(c.signals).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k.replace(/_/g, " ")} ${Number.isInteger(v) ? v : v.toFixed(2)}`).join(", ")],
    ["LLM review", llmSummary(c.llm_review)],
    ["Content logging", c.content_logging ? "on" : "off"],
    ["Purged in", `${span(until(c.purge_due_at))} (due ${stamp(c.purge_due_at)})`],
  ];
  $("case-meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  const access = c.your_access;
  const active = access.status === "active";
  $("access-state").replaceChildren(...grantLine(access, c));
  $("access-state").dataset.status = access.status;
  const mayAsk = !active && access.status !== "grant_pending";
  $("request-form").hidden = !mayAsk;
  $("give-up").hidden = !active;

  const verdicts = new Map(c.verdicts.map((v) => [v.request_id, v]));
  $("sample-list").replaceChildren(...c.sample.map((rid) => {
    const v = verdicts.get(rid);
    const verdict = !v ? "not reviewed yet"
      : v.assessment
        ? `${v.assessment.violation ? "violation" : "no violation"} (${v.assessment.severity}, confidence ${v.assessment.confidence.toFixed(2)}) · ${v.route}`
        : `no usable answer · ${v.route}`;
    return el("li", { "data-request": rid },
      el("code", {}, rid),
      el("span", { class: "muted" }, ` LLM: ${verdict}`),
      el("button", { type: "button", class: "read", disabled: !active,
        "aria-label": `Read record ${rid}`, onclick: () => openRecord(c.case_id, rid) }, "Read"));
  }));

  const target = $("decision-target");
  target.replaceChildren(el("option", { value: "" }, "The whole case"),
    ...c.sample.map((rid) => el("option", { value: rid }, `Record ${rid}`)));
  const form = $("decision-form");
  for (const input of form.elements) input.disabled = !active;
  form.title = active ? "" : "Recording a decision needs an active grant for this case.";
  const decisions = [...c.decisions].reverse();
  $("decision-list").replaceChildren(...(decisions.length ? decisions.map((d) =>
    el("li", { class: d.outcome },
      el("strong", {}, OUTCOMES[d.outcome]),
      ` on ${d.request_id ? `record ${d.request_id}` : "the whole case"} by ${d.reviewer}, ${stamp(d.decided_at)}`,
      d.note ? el("blockquote", {}, d.note) : d.note_status === "withheld" ? el("div", { class: "muted" }, "note shown only on a workstation, under an active grant") : d.note_status === "unreadable" ? el("div", { class: "muted" }, "note unreadable (its key is gone)") : null))
    : [el("li", { class: "muted" }, "No decisions yet.")]));
  $("case-title").focus();
}

async function requestAccess(event) {
  event.preventDefault();
  const reason = $("reason").value.trim();
  try {
    const r = await api("POST", `/v1/cases/${encodeURIComponent(caseState.id)}/access-requests`, { reason });
    $("reason").value = "";
    showInfo(`Access requested (${r.id}); a manager must approve it.`);
    await renderCase(caseState.id);
  } catch (e) {
    showRefusal(e, "request access");
  }
}

async function giveUpGrant() {
  const id = caseState.view?.your_access?.access_request;
  if (!id) return;
  try {
    await api("POST", `/v1/access-requests/${id}/revoke`);
    closeRecord();
    showInfo("Grant given up.");
    await renderCase(caseState.id);
  } catch (e) {
    showRefusal(e, "give up");
  }
}

async function recordDecision(event) {
  event.preventDefault();
  const form = event.target;
  const body = {
    decision: form.elements.decision.value,
    note: $("decision-note").value.trim(),
  };
  const target = $("decision-target").value;
  if (target) body.request_id = target;
  try {
    const d = await api("POST", `/v1/cases/${encodeURIComponent(caseState.id)}/decisions`, body);
    form.reset();
    showInfo(`Decision recorded: ${OUTCOMES[d.outcome]} on ${d.request_id ? `record ${d.request_id}` : "the whole case"}.`);
    await renderCase(caseState.id);
  } catch (e) {
    showRefusal(e, "decision");
  }
}

// ---------------------------------------------------------------------------------------------
// The record view: one record at a time, watermarked, closed when the grant ends: at its
// expiry (a timer here), or as soon as a poll of the grant finds it revoked or no longer
// active. The content lives in the view's DOM nodes only, and leaves with them.

const record = { timer: null, ticker: null, poller: null, opener: null, grant: null };

/** What a grant's status (GET /v1/access-requests/{id}) means for an open record. */
const GRANT_ENDED = {
  revoked: ["grant_revoked", "your grant for this case was revoked"],
  expired: ["grant_expired", "your grant for this case has expired"],
  denied: ["grant_denied", "your grant for this case was denied"],
  pending: ["not_active", "your grant for this case is not active"],
};

async function openRecord(caseId, requestId) {
  closeRecord();
  record.opener = document.activeElement;
  let r;
  try {
    r = await api("GET", `/v1/cases/${encodeURIComponent(caseId)}/records/${encodeURIComponent(requestId)}`);
  } catch (e) {
    showRefusal(e, `record ${requestId}`);
    if (["grant_expired", "grant_revoked", "no_grant"].includes(e.code)) await renderCase(caseId);
    return;
  }
  clearNotice();
  syncClock(r.watermark.read_at);
  fillRecord(r);
  // Only the grant's identity and end are kept: nothing below holds the record itself.
  const grant = { id: r.grant.access_request, expires: r.grant.expires_at, caseId: r.case_id };
  r = null;
  record.grant = grant;
  const tick = () => {
    const left = until(grant.expires);
    $("record-timer").textContent = `grant ends in ${span(left)}`;
    $("record-timer").classList.toggle("soon", left < 120e3);
  };
  tick();
  record.ticker = setInterval(tick, 1000);
  record.timer = setTimeout(() => endRecord(grant, "grant_expired", "your grant for this case has expired"),
    Math.max(0, until(grant.expires)));
  record.poller = setInterval(() => checkGrant(grant), GRANT_POLL_MS);
  $("record-title").focus();
}

/** Shows a record in the view, as text only. */
function fillRecord(r) {
  const mark = `${r.watermark.reviewer} · ${stamp(r.watermark.read_at)} · ${r.watermark.workstation || ""}`;
  $("record-title").textContent = `Record ${r.request_id}`;
  $("record-meta").textContent = `Case ${r.case_id} · ${r.resource_id} (${r.geography}) · model ${r.model} · stored ${stamp(r.stored_at)}`;
  $("record-prompt").textContent = r.prompt;
  $("record-completion").textContent = r.completion ?? "(no completion)";
  $("record-mark").textContent = `Viewed by ${r.watermark.reviewer} at ${stamp(r.watermark.read_at)} on workstation ${r.watermark.workstation} under grant ${r.grant.access_request}. Every read is audited.`;
  const wm = $("record-watermark");
  wm.replaceChildren(...Array.from({ length: 60 }, () => el("span", {}, mark)));
  const view = $("record-view");
  view.dataset.request = r.request_id;
  view.hidden = false;
  document.body.classList.add("reading");
  announce(`Record ${r.request_id} open`);
}

/**
 * Asks the API where the open record's grant stands (metadata, not the record: no content
 * read is audited) and closes the record unless it is still active. Fails closed: a grant
 * that cannot be confirmed closes the record too.
 */
async function checkGrant(grant) {
  if (record.grant !== grant || grant.checking) return;
  if (until(grant.expires) <= 0) {
    endRecord(grant, "grant_expired", "your grant for this case has expired");
    return;
  }
  grant.checking = true;
  let status;
  try {
    status = (await api("GET", `/v1/access-requests/${encodeURIComponent(grant.id)}`)).status;
  } catch (e) {
    if (record.grant !== grant) return;
    if (e instanceof Refused && e.code === "unauthenticated") {
      showRefusal(e);
      return;
    }
    endRecord(grant, "grant_unconfirmed",
      `the grant could not be confirmed (${e.code || "error"})`);
    return;
  } finally {
    grant.checking = false;
  }
  // Closed, or another record opened, while the answer was on its way.
  if (record.grant !== grant || status === "active") return;
  const [code, why] = GRANT_ENDED[status] || ["not_active", `your grant is ${status}`];
  endRecord(grant, code, why);
}

/** Closes the record of `grant` (if it is still the one open), says why, refreshes the case. */
function endRecord(grant, code, why) {
  if (record.grant !== grant) return;
  closeRecord();
  showRefusal(new Refused(403, code, `${why}; the record view was closed`));
  if (caseState.id) renderCase(caseState.id).catch(showRefusal);
}

function closeRecord() {
  clearTimeout(record.timer);
  clearInterval(record.ticker);
  clearInterval(record.poller);
  record.timer = record.ticker = record.poller = null;
  record.grant = null;
  const view = $("record-view");
  if (view.hidden) return;
  view.hidden = true;
  delete view.dataset.request;
  // Content leaves the page with the view.
  for (const id of ["record-title", "record-prompt", "record-completion", "record-watermark", "record-mark", "record-meta", "record-timer"]) {
    $(id).replaceChildren();
  }
  document.body.classList.remove("reading");
  if (record.opener && document.contains(record.opener)) record.opener.focus();
  record.opener = null;
}

// ---------------------------------------------------------------------------------------------
// Access requests: one's own, and (managers) everyone's pending ones.

function statusLine(r) {
  switch (r.status) {
    case "active": return `approved by ${r.by}, ${span(until(r.expires_at))} left`;
    case "pending": return "pending";
    case "denied": return `denied by ${r.by}`;
    case "expired": return `expired at ${stamp(r.expires_at)}`;
    case "revoked": return `revoked by ${r.by}`;
    default: return r.status;
  }
}

function requestItem(r, actions) {
  return el("li", { class: `request ${r.status}`, "data-access-request": r.id },
    el("div", {},
      el("a", { href: `#/cases/${encodeURIComponent(r.case_id)}` }, r.case_id),
      " · ", r.resource_id, ` (${r.geography})`,
      el("span", { class: `state ${r.status}` }, statusLine(r))),
    el("div", { class: "muted" }, `${r.id} · asked by ${r.requester} at ${stamp(r.requested_at)}`),
    el("blockquote", {}, r.reason),
    actions);
}

async function renderRequests() {
  show("requests");
  const data = await api("GET", "/v1/access-requests");
  const mine = data.access_requests.filter((r) => r.requester === session.me.name)
    .sort((a, b) => b.requested_at.localeCompare(a.requested_at));
  $("request-list").replaceChildren(...mine.map((r) => requestItem(r, null)));
  $("requests-empty").hidden = mine.length > 0;
}

async function renderApprovals() {
  show("approvals");
  const data = await api("GET", "/v1/access-requests?state=pending");
  const pending = data.access_requests.sort((a, b) => a.requested_at.localeCompare(b.requested_at));
  $("approval-list").replaceChildren(...pending.map((r) => {
    if (r.requester === session.me.name) {
      return requestItem(r, el("p", { class: "muted" }, "Your own request: another manager must decide it."));
    }
    const durationId = `duration-${r.id}`;
    const noteId = `note-${r.id}`;
    const decide = (verb) => async (event) => {
      event.preventDefault();
      const body = verb === "approve"
        ? { duration_secs: Number($(durationId).value) }
        : ($(noteId).value.trim() ? { note: $(noteId).value.trim() } : {});
      try {
        await api("POST", `/v1/access-requests/${r.id}/${verb}`, body);
        showInfo(`${verb === "approve" ? "Approved" : "Denied"}: ${r.requester}'s request for ${r.case_id}.`);
        await renderApprovals();
        refreshPendingCount();
      } catch (e) {
        showRefusal(e, verb);
      }
    };
    return requestItem(r, el("form", { class: "decide", onsubmit: decide("approve") },
      el("label", { for: durationId }, "Grant for"),
      el("select", { id: durationId },
        GRANT_DURATIONS.map(([secs, label]) => el("option", { value: secs, selected: secs === 3600 }, label))),
      el("button", { type: "submit", class: "primary", "aria-label": `Approve ${r.requester}'s request for ${r.case_id}` }, "Approve"),
      el("label", { for: noteId }, "Note (if denying)"),
      el("input", { id: noteId, type: "text", maxlength: 1000 }),
      el("button", { type: "button", class: "danger", onclick: decide("deny"),
        "aria-label": `Deny ${r.requester}'s request for ${r.case_id}` }, "Deny")));
  }));
  $("approvals-empty").hidden = pending.length > 0;
}

async function refreshPendingCount() {
  try {
    const data = await api("GET", "/v1/access-requests?state=pending");
    const n = data.access_requests.filter((r) => r.requester !== session.me.name).length;
    $("pending-count").textContent = n ? String(n) : "";
  } catch {
    // The count is a convenience; the approvals view says what went wrong.
  }
}

// ---------------------------------------------------------------------------------------------
// Start.

function refreshCountdowns() {
  for (const node of document.querySelectorAll("[data-countdown]")) {
    node.textContent = span(until(node.dataset.countdown));
  }
}

async function start() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await signIn($("token").value)) {
      $("token").value = "";
      clearNotice();
      if (!location.hash || location.hash === "#/signin") location.hash = "#/cases";
      else route();
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("request-form").addEventListener("submit", requestAccess);
  $("decision-form").addEventListener("submit", recordDecision);
  $("give-up").addEventListener("click", giveUpGrant);
  $("record-close").addEventListener("click", closeRecord);
  $("refresh-cases").addEventListener("click", () => renderCases().catch(showRefusal));
  $("refresh-requests").addEventListener("click", () => renderRequests().catch(showRefusal));
  $("refresh-approvals").addEventListener("click", () => renderApprovals().catch(showRefusal));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("record-view").hidden) closeRecord();
  });
  window.addEventListener("hashchange", async () => {
    // A sign-in link opened in this tab: its fragment goes at once, and the route stays.
    const linked = takeLink();
    if (linked !== null) {
      if (await offerLink(linked)) route();
      return;
    }
    if ($("notice").dataset.route !== location.hash) clearNotice();
    route();
  });
  // A hidden tab's timers are throttled: check the open record's grant as soon as it shows.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && record.grant) checkGrant(record.grant);
  });
  setInterval(refreshCountdowns, 1000);

  // A sign-in link's token leaves the URL before anything else happens; the session in force
  // (this tab's) is restored first, and the link may only offer to replace it.
  const linked = takeLink();
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored && !(await signIn(stored))) sessionStorage.removeItem(TOKEN_KEY);
  if (linked !== null) await offerLink(linked);
  route();
}

start();
