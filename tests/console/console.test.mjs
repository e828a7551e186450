// The reviewer console end to end, in headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core, against a real `vigil serve` that tests/console.rs started and seeded.
//
// The reviewer works in a browser context holding the workstation's client certificate (as a
// secure workstation's browser would); the managers and a second reviewer context use the plain
// listener without one, and can read nothing. Screenshots of the main screens go to
// config.screenshots. Exits non-zero at the first failed check, naming it.
//
// Input: the JSON in $VIGIL_CONSOLE_TEST (see tests/console.rs).

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const config = JSON.parse(process.env.VIGIL_CONSOLE_TEST);
mkdirSync(config.screenshots, { recursive: true });

let step = "start";
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}
function log(text) {
  console.log(`console test: ${text}`);
}

const browser = await chromium.launch({
  executablePath: config.chromium || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

/** A browser context; with the workstation certificate when `workstation` is set. */
async function context(workstation, viewport = { width: 1280, height: 800 }) {
  const options = { viewport, ignoreHTTPSErrors: true };
  if (workstation) {
    options.clientCertificates = [{ origin: config.https, certPath: config.cert, keyPath: config.key }];
  }
  const ctx = await browser.newContext(options);
  const page = await ctx.newPage();
  const failures = [];
  // The page may never pop a dialog: content that tried to run script would show here.
  page.on("dialog", async (d) => {
    failures.push(`unexpected dialog: ${d.message()}`);
    await d.dismiss();
  });
  page.on("pageerror", (e) => failures.push(e.message));
  // Only the console's own origins may ever be asked for anything.
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(config.http) && !url.startsWith(config.https) && !url.startsWith("data:")) {
      failures.push(`external request ${url}`);
    }
  });
  page.failures = failures;
  return page;
}

async function shot(page, name) {
  const path = join(config.screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
}

/** Signs in by keyboard only: the token field has the focus; type, Enter. */
async function signIn(page, base, who) {
  await page.goto(`${base}/console`);
  await page.waitForSelector("#view-signin:not([hidden])");
  check(await page.evaluate(() => document.activeElement?.id) === "token", "the token field has the focus");
  await page.keyboard.type(config.tokens[who]);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#whoami:not([hidden])");
  check((await page.textContent("#who-name")) === who, `signed in as ${who}`);
}

/** The refusal the page shows next (an earlier screen's notice is cleared on navigation). */
async function notice(page) {
  await page.waitForSelector("#notice.refusal:not([hidden])");
  return { code: await page.getAttribute("#notice", "data-code"), text: await page.textContent("#notice") };
}

async function openCase(page, caseId) {
  await page.goto(`${page.url().split("#")[0]}#/cases/${caseId}`);
  await page.waitForSelector(`#view-case:not([hidden])`);
  await page.waitForFunction((id) => document.getElementById("case-title").textContent === `Case ${id}`, caseId);
}

async function requestAccess(page, caseId, reason) {
  await openCase(page, caseId);
  await page.fill("#reason", reason);
  await page.click("#request-form button[type=submit]");
}

async function approve(page, who, caseId, duration) {
  await page.goto(`${config.http}/console#/approvals`);
  const item = page.locator(`#approval-list li:has(a:text-is("${caseId}"))`).filter({ hasText: who });
  await item.first().waitFor();
  if (duration) await item.first().locator("select").selectOption(String(duration));
  await item.first().getByRole("button", { name: "Approve" }).click();
  await page.locator("#notice.info", { hasText: `Approved: ${who}'s request for ${caseId}.` }).waitFor();
}

try {
  // -- The reviewer, on a secure workstation.
  step = "reviewer signs in on the workstation";
  const rita = await context(true);
  await signIn(rita, config.https, "rita");
  check((await rita.textContent("#who-role")) === "reviewer", "role shown");
  check((await rita.textContent("#who-region")) === "EEA", "region shown");
  check((await rita.textContent("#who-workstation")).includes(config.workstation), "workstation shown");
  step = "the queue";
  await rita.waitForSelector(`#case-table tr[data-case="${config.case.id}"]`);
  const rows = await rita.locator("#case-table tbody tr").count();
  check(rows === config.case_count, `queue lists ${config.case_count} cases (saw ${rows})`);
  const row = rita.locator(`#case-table tr[data-case="${config.case.id}"]`);
  const rowText = await row.textContent();
  check(/\d+ d \d+ h/.test(rowText), "time left before the purge is shown in days and hours");
  check(rowText.includes("reviewed"), "LLM review column filled");
  const queueText = await rita.textContent("#case-table");
  for (const secret of config.secrets) check(!queueText.includes(secret), "the queue shows no content");
  await shot(rita, "1-queue");

  step = "the case, before any grant";
  // By keyboard: focus the case link and press Enter.
  await row.locator("a").focus();
  await rita.keyboard.press("Enter");
  await rita.waitForSelector('#access-state[data-status="no_grant"]');
  check(await rita.locator("#sample-list button.read").first().isDisabled(), "Read is disabled without a grant");
  step = "request access";
  await rita.fill("#reason", "Recurring self-harm flags on this end user; confirm before escalation.");
  await rita.click("#request-form button[type=submit]");
  await rita.waitForSelector('#access-state[data-status="grant_pending"]');
  check((await rita.textContent("#access-state")).includes("Pending"), "pending shown");
  await shot(rita, "2-case-pending");

  // -- A manager, without a workstation, approves it.
  step = "manager approves";
  const max = await context(false);
  await signIn(max, config.http, "max");
  check((await max.textContent("#who-workstation")).includes("no workstation"), "manager has no workstation");
  await max.goto(`${config.http}/console#/approvals`);
  await max.waitForSelector(`#approval-list li:has-text("rita")`);
  await shot(max, "3-approvals");
  await approve(max, "rita", config.case.id, 3600);

  step = "a manager's own request cannot be decided by them";
  const mia = await context(false);
  await signIn(mia, config.http, "mia");
  await requestAccess(mia, config.case.id, "Second opinion on the same case.");
  await mia.waitForSelector('#access-state[data-status="grant_pending"]');
  await mia.goto(`${config.http}/console#/approvals`);
  const own = mia.locator("#approval-list li").filter({ hasText: "Your own request" });
  await own.first().waitFor();
  check(await own.first().getByRole("button", { name: "Approve" }).count() === 0, "no Approve button on one's own request");

  step = "the reviewer reads a flagged record";
  await rita.reload();
  await rita.waitForSelector('#access-state[data-status="active"]');
  check((await rita.textContent("#access-state")).includes("Approved"), "approved shown");
  const first = config.case.sample[0];
  await rita.locator(`#sample-list li[data-request="${first}"] button.read`).click();
  await rita.waitForSelector("#record-view:not([hidden])");
  check((await rita.textContent("#record-prompt")) === config.case.prompt, "the stored prompt is shown, as text");
  const mark = await rita.textContent("#record-mark");
  check(mark.includes("rita") && mark.includes(config.workstation), "watermarked with reviewer and workstation");
  check((await rita.textContent("#record-watermark")).includes("rita"), "watermark overlay names the reviewer");
  check(/grant ends in \d+ min/.test(await rita.textContent("#record-timer")), "grant countdown shown");
  await shot(rita, "4-record");
  step = "one record at a time; Escape closes and clears it";
  await rita.keyboard.press("Escape");
  await rita.waitForSelector("#record-view", { state: "hidden" });
  check((await rita.textContent("#record-prompt")) === "", "content removed from the page on close");

  step = "a decision per record";
  await rita.selectOption("#decision-target", first);
  await rita.check('input[name="decision"][value="abuse_confirmed"]');
  await rita.fill("#decision-note", config.note);
  await rita.click("#decision-form button[type=submit]");
  await rita.waitForSelector("#decision-list li.abuse_confirmed");
  check((await rita.textContent("#decision-list")).includes(config.note), "the note is shown to the grant holder");
  step = "a decision on the whole case";
  await rita.selectOption("#decision-target", "");
  await rita.check('input[name="decision"][value="needs_escalation"]');
  await rita.click("#decision-form button[type=submit]");
  await rita.waitForSelector("#decision-list li.needs_escalation");
  await shot(rita, "5-decision");
  step = "decisions in the queue";
  await rita.goto(`${config.https}/console#/cases`);
  const decided = rita.locator(`#case-table tr[data-case="${config.case.id}"] .tag.abuse_confirmed`);
  await decided.waitFor();
  const queueAfter = await rita.textContent("#case-table");
  check(!queueAfter.includes(config.note), "the queue never shows notes");

  // -- The same reviewer without the certificate: can sign in, can read nothing.
  step = "no certificate: the plain console reads nothing";
  const bare = await context(false);
  await signIn(bare, config.http, "rita");
  check((await bare.textContent("#who-workstation")).includes("no workstation"), "no workstation shown");
  await openCase(bare, config.case.id);
  await bare.waitForSelector('#access-state[data-status="active"]');
  await bare.locator(`#sample-list li[data-request="${first}"] button.read`).click();
  let n = await notice(bare);
  check(n.code === "no_workstation", `plain listener refused with no_workstation (got ${n.code})`);
  check((await bare.isHidden("#record-view")), "no record view opened");
  await shot(bare, "6-no-workstation");
  step = "no certificate: the workstation listener is closed to it";
  let handshake = null;
  try {
    await bare.goto(`${config.https}/console`);
  } catch (e) {
    handshake = e.message;
  }
  check(handshake !== null, "the workstation listener refuses a browser without a certificate");

  // -- Refusals, said plainly.
  step = "EEA rule";
  const uma = await context(true);
  await signIn(uma, config.https, "uma");
  await openCase(uma, config.case.id);
  check((await uma.textContent("#access-state")).includes("EEA"), "the case says only EEA reviewers may ask");
  await uma.fill("#reason", "Checking the EEA case.");
  await uma.click("#request-form button[type=submit]");
  n = await notice(uma);
  check(n.code === "eea_rule" && n.text.includes("EEA"), `EEA refusal shown (got ${n.code})`);
  await shot(uma, "7-eea-rule");

  step = "content logging off";
  await requestAccess(rita, config.quiet_case, "Looking at the health resource.");
  n = await notice(rita);
  check(n.code === "content_logging_off" && n.text.includes("content logging off"), `content logging refusal shown (got ${n.code})`);
  await shot(rita, "8-content-logging-off");

  step = "the record view closes when the grant expires";
  await requestAccess(rita, config.expiry.case, "Short look at the second case.");
  await rita.waitForSelector('#access-state[data-status="grant_pending"]');
  // A manager grants it for a few seconds only (the form offers 15 minutes and up).
  const approved = await fetch(`${config.http}/v1/access-requests/${await pendingId(config.expiry.case)}/approve`, {
    method: "POST",
    headers: { Authorization: `Bearer ${config.tokens.max}`, "Content-Type": "application/json" },
    body: JSON.stringify({ duration_secs: config.expiry.seconds }),
  });
  check(approved.ok, `short approval accepted (${approved.status})`);
  await rita.reload();
  await rita.waitForSelector('#access-state[data-status="active"]');
  await rita.locator(`#sample-list li[data-request="${config.expiry.request}"] button.read`).click();
  await rita.waitForSelector("#record-view:not([hidden])");
  await rita.waitForSelector("#record-view", { state: "hidden", timeout: (config.expiry.seconds + 10) * 1000 });
  n = await notice(rita);
  check(n.code === "grant_expired", `expiry notice shown (got ${n.code})`);
  check((await rita.textContent("#record-prompt")) === "", "expired content removed from the page");
  await rita.waitForSelector('#access-state[data-status="grant_expired"]');
  await shot(rita, "9-grant-expired");

  step = "a narrow window";
  const narrow = await context(true, { width: 390, height: 844 });
  await signIn(narrow, config.https, "rita");
  await narrow.waitForSelector(`#case-table tr[data-case="${config.case.id}"]`);
  const overflow = await narrow.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no horizontal scrolling at 390 px (overflow ${overflow} px)`);
  await shot(narrow, "10-narrow-queue");
  await openCase(narrow, config.case.id);
  const overflowCase = await narrow.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflowCase <= 0, `no horizontal scrolling on a case at 390 px (overflow ${overflowCase} px)`);
  await shot(narrow, "11-narrow-case");

  for (const page of [rita, max, mia, bare, uma, narrow]) {
    check(page.failures.length === 0, `no script errors or outside requests: ${page.failures.join("; ")}`);
  }
  log("all checks passed");
  await browser.close();
} catch (e) {
  console.error(`console test failed at "${step}": ${e.stack || e}`);
  await browser.close().catch(() => {});
  process.exit(1);
}

/** The ID of rita's pending request for `caseId`, from the API (as the manager sees it). */
async function pendingId(caseId) {
  const r = await fetch(`${config.http}/v1/access-requests?state=pending`, {
    headers: { Authorization: `Bearer ${config.tokens.max}` },
  });
  const body = await r.json();
  const found = body.access_requests.find((a) => a.case_id === caseId && a.requester === "rita");
  check(found, `rita's pending request for ${caseId}`);
  return found.id;
}
