// The console on a workstation whose browser holds the client certificate itself, in headless
// Chromium (Debian's /usr/bin/chromium) driven by playwright-core, against a real `vigil serve`
// that tests/console.rs started and seeded (an active grant of rita's for config.case.id).
//
// Unlike console.test.mjs (whose contexts get the certificate from Playwright, which makes the
// TLS connection itself), Chromium here presents the certificate from its own NSS store: a
// temporary HOME whose ~/.pki/nssdb holds vigil's CA (trusted) and the workstation's key pair
// (tests/console.rs prepares it with certutil and pk12util), and a user-data-dir whose
// Preferences select that certificate for the workstation origin (the content setting behind
// the AutoSelectCertificateForUrls policy; without it headless Chromium waits on the
// certificate picker forever).
//
// Three parts, each reported on its own; exits non-zero if any failed:
//  - certificate: with Chromium's OmitCorsClientCert feature on (the Fetch standard's rule,
//    Firefox's behaviour: a request whose credentials mode is "omit" presents no client
//    certificate), the reviewer signs in and reads a record over the workstation listener.
//  - revocation: a record open under the grant closes within seconds of a manager revoking it,
//    and its text is gone from the DOM and from the page's JavaScript heap.
//  - token link: a `#token=` link (a fresh load, or a fragment change in the open page) never
//    replaces the session in force without asking, and leaves the address bar at once.
//
// Input: the JSON in $VIGIL_CONSOLE_TEST (see tests/console.rs).

import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const config = JSON.parse(process.env.VIGIL_CONSOLE_TEST);
mkdirSync(config.screenshots, { recursive: true });

let step = "start";
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}
function log(text) {
  console.log(`workstation test: ${text}`);
}

/**
 * A Chromium of its own (persistent context: the certificate choice lives in the profile),
 * with the NSS store of config.nss_home. `strict`: client certificates only where the
 * credentials mode allows them.
 */
async function launch(strict) {
  const profile = mkdtempSync(join(tmpdir(), "vigil-chromium-"));
  const pattern = `${config.https},*`;
  mkdirSync(join(profile, "Default"), { recursive: true });
  writeFileSync(join(profile, "Default", "Preferences"), JSON.stringify({
    profile: { content_settings: { exceptions: { auto_select_certificate: {
      [pattern]: { setting: { filters: [{ ISSUER: { CN: config.ca_name }, SUBJECT: { CN: config.workstation } }] } },
    } } } },
  }));
  const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"];
  if (strict) args.push("--enable-features=OmitCorsClientCert");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium || "/usr/bin/chromium",
    args,
    env: { ...process.env, HOME: config.nss_home },
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] || await context.newPage();
  const failures = [];
  const messages = [];
  page.on("pageerror", (e) => failures.push(e.message));
  page.on("console", (m) => messages.push(m.text()));
  page.on("dialog", async (d) => {
    failures.push(`unexpected dialog: ${d.message()}`);
    await d.dismiss();
  });
  page.failures = failures;
  page.messages = messages;
  page.done = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return page;
}

async function shot(page, name) {
  const path = join(config.screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
}

async function signIn(page, who) {
  await page.goto(`${config.https}/console`);
  await page.waitForSelector("#view-signin:not([hidden])");
  await page.fill("#token", config.tokens[who]);
  await page.press("#token", "Enter");
  // A refusal (say, the API unreachable because no certificate was presented) ends the wait.
  await page.waitForSelector("#whoami:not([hidden]), #notice.refusal:not([hidden])");
  const refused = await page.isVisible("#notice.refusal");
  check(!refused, `signed in as ${who} (refused: ${refused && await page.getAttribute("#notice", "data-code")})`);
  check((await page.textContent("#who-name")) === who, `signed in as ${who}`);
}

/** Opens the case and a record of it; returns the page's refusal code, if any. */
async function read(page, requestId) {
  await page.goto(`${config.https}/console#/cases/${config.case.id}`);
  await page.waitForSelector('#access-state[data-status="active"]');
  await page.locator(`#sample-list li[data-request="${requestId}"] button.read`).click();
  await page.waitForSelector("#record-view:not([hidden]), #notice.refusal:not([hidden])");
  const refused = await page.isVisible("#notice.refusal");
  check(!refused, `record ${requestId} read (refused: ${refused && await page.getAttribute("#notice", "data-code")})`);
  check((await page.textContent("#record-prompt")) === config.case.prompts[requestId], "the stored prompt is shown");
  check((await page.textContent("#record-mark")).includes(config.workstation), "watermarked with the workstation");
}

/** Every string in the page's JavaScript heap (after a full garbage collection) that holds `text`. */
async function heapHolding(page, text) {
  const cdp = await page.context().newCDPSession(page);
  const chunks = [];
  cdp.on("HeapProfiler.addHeapSnapshotChunk", (e) => chunks.push(e.chunk));
  await cdp.send("HeapProfiler.enable");
  await cdp.send("HeapProfiler.collectGarbage");
  await cdp.send("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  await cdp.detach();
  return JSON.parse(chunks.join("")).strings.filter((s) => s.includes(text));
}

const failed = [];
async function part(name, body) {
  step = name;
  let page = null;
  try {
    await body((p) => { page = p; });
    log(`${name}: passed`);
  } catch (e) {
    failed.push(name);
    console.error(`workstation test: ${name} failed at "${step}": ${e.stack || e}`);
    if (page) await shot(page, `failed-${name.replace(/\W+/g, "-")}`).catch(() => {});
  } finally {
    if (page) await page.done().catch(() => {});
  }
}

const [certRead, revokedRead] = config.case.reads;

await part("certificate", async (keep) => {
  step = "certificate: Chromium presents the workstation certificate from its NSS store";
  const page = await launch(true);
  keep(page);
  await signIn(page, "rita");
  check((await page.textContent("#who-workstation")).includes(config.workstation),
    "the API saw the workstation certificate on the console's own requests");
  step = "certificate: the record fetch presents it too";
  await read(page, certRead);
  await shot(page, "12-certificate-record");
  check(page.failures.length === 0, `no script errors: ${page.failures.join("; ")}`);
});

await part("revocation", async (keep) => {
  step = "revocation: a record open under the grant";
  const page = await launch(false);
  keep(page);
  await signIn(page, "rita");
  await read(page, revokedRead);
  const prompt = config.case.prompts[revokedRead];
  step = "revocation: a manager revokes the grant";
  const revoked = await fetch(`${config.http}/v1/access-requests/${config.case.grant}/revoke`, {
    method: "POST",
    headers: { Authorization: `Bearer ${config.tokens.max}` },
  });
  check(revoked.ok, `revocation accepted (${revoked.status})`);
  const started = Date.now();
  step = "revocation: the record view closes within seconds";
  await page.waitForSelector("#record-view", { state: "hidden", timeout: config.close_within_ms });
  log(`record closed ${Date.now() - started} ms after the revocation`);
  await page.waitForSelector("#notice.refusal:not([hidden])");
  const code = await page.getAttribute("#notice", "data-code");
  check(code === "grant_revoked", `revocation notice shown (got ${code})`);
  await page.waitForSelector('#access-state[data-status="grant_revoked"]');
  step = "revocation: the content is gone from the page";
  const dom = await page.evaluate(() => document.documentElement.outerHTML);
  for (const text of [prompt, prompt.slice(0, 40)]) {
    check(!dom.includes(text) && !dom.includes(text.replaceAll("&", "&amp;").replaceAll("<", "&lt;")),
      "no trace of the prompt in the DOM");
  }
  const held = await heapHolding(page, prompt.slice(0, 40));
  check(held.length === 0, `no string in the page's heap holds the prompt (${held.length} do)`);
  await shot(page, "13-revoked");
  check(page.failures.length === 0, `no script errors: ${page.failures.join("; ")}`);
});

await part("token link", async (keep) => {
  const page = await launch(false);
  keep(page);
  const [rita, rhea] = [config.tokens.rita, config.tokens.rhea];
  await signIn(page, "rita");
  const stillRita = async (how) => {
    const asked = await page.waitForSelector('#notice[data-prompt="token-link"]:not([hidden])', { timeout: 5000 })
      .then(() => true, () => false);
    check((await page.textContent("#who-name")) === "rita", `${how}: still signed in as rita`);
    check(await page.evaluate(() => sessionStorage.getItem("vigil.console.token")) === rita,
      `${how}: the session's token is still rita's`);
    const url = page.url();
    check(!url.includes("token=") && !url.includes(rhea), `${how}: the token left the address bar (${url.replace(rhea, "…")})`);
    check(asked, `${how}: the page asks before switching`);
  };
  step = "token link: a fresh load with another reviewer's token";
  await page.goto("about:blank");
  await page.goto(`${config.https}/console#token=${rhea}`);
  await page.waitForSelector("#whoami:not([hidden])");
  await stillRita("fresh load");
  await shot(page, "14-token-link");
  await page.getByRole("button", { name: "Stay signed in as rita" }).click();
  await page.waitForSelector('#notice.info:not([hidden])');
  check((await page.textContent("#who-name")) === "rita", "kept rita's session");
  step = "token link: the same link opened in the open page (a fragment change)";
  await page.goto(`${config.https}/console#/cases`);
  await page.waitForSelector("#view-cases:not([hidden])");
  await page.goto(`${config.https}/console#token=${rhea}`);
  await stillRita("fragment change");
  check(await page.isVisible("#view-cases"), "the screen stays where it was");
  step = "token link: switching only when asked to";
  await page.getByRole("button", { name: "Switch to the link's session" }).click();
  await page.waitForFunction(() => document.getElementById("who-name").textContent === "rhea");
  check(await page.evaluate(() => sessionStorage.getItem("vigil.console.token")) === rhea, "the session is rhea's now");
  step = "token link: the same token again changes nothing";
  await page.goto(`${config.https}/console#token=${rhea}`);
  await page.waitForFunction(() => !location.hash.includes("token="));
  check(await page.isHidden('#notice[data-prompt="token-link"]'), "no offer for the token in force");
  for (const token of [rita, rhea]) {
    check(!page.messages.some((m) => m.includes(token)), "no token in the page's console messages");
  }
  check(page.failures.length === 0, `no script errors: ${page.failures.join("; ")}`);
});

if (failed.length) {
  console.error(`workstation test: failed: ${failed.join(", ")}`);
  process.exit(1);
}
log("all parts passed");
