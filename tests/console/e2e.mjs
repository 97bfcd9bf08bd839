// The operator console, end to end: `wxpay simulate` and `wxpay serve` as
// processes, driven by headless Chromium (Debian's, through playwright-core)
// with Chromium's virtual WebAuthn authenticator standing in for a phone.
//
// Usage (from the repository root, after `cargo build`):
//
//     node tests/console/e2e.mjs [path/to/wxpay]
//
// Environment: CHROMIUM (default /usr/bin/chromium), WXPAY_SCREENSHOTS
// (default target/console-screenshots). Prints one line per check and
// exits non-zero on any failure.

import { execFile, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const wxpay = resolve(process.argv[2] ?? join(root, "target/debug/wxpay"));
const shots = resolve(process.env.WXPAY_SCREENSHOTS ?? join(root, "target/console-screenshots"));
const KEY = "192006250b4c09247ec02edce69f6a2d";
const PASSKEY_THRESHOLD_FEN = 5000;

let passed = 0;
let failed = 0;

function check(name, ok, detail = "") {
  if (ok) {
    passed += 1;
    console.log(`PASS ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ""}`);
  }
  return ok;
}

function freePort() {
  return new Promise((done, fail) => {
    const server = createNetServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

const children = [];
let currentPage = null;

function start(args, name) {
  const child = spawn(wxpay, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  child.log = () => log;
  child.name = name;
  children.push(child);
  return child;
}

async function run(args) {
  try {
    const { stdout, stderr } = await promisify(execFile)(wxpay, args);
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code ?? 1, stdout: e.stdout ?? "", stderr: e.stderr ?? String(e) };
  }
}

async function waitFor(what, probe, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function configText(dir, simPort, publicPort, agentPort) {
  const keyFile = join(dir, "api_key");
  writeFileSync(keyFile, KEY);
  chmodSync(keyFile, 0o600);
  const replacements = [
    ['key_file = "api_key"', `key_file = ${JSON.stringify(keyFile)}`],
    ["http://127.0.0.1:8090", `http://127.0.0.1:${simPort}`],
    ["127.0.0.1:8080", `127.0.0.1:${publicPort}`],
    ['# agent_listen = "127.0.0.1:8081"', `agent_listen = "127.0.0.1:${agentPort}"`],
    ['sqlite = "wxpay.db"', `sqlite = ${JSON.stringify(join(dir, "wxpay.db"))}`],
    ['# client_cert = "apiclient_cert.pem"', `client_cert = ${JSON.stringify(join(dir, "cert.pem"))}`],
    ['# client_key = "apiclient_key.pem"', `client_key = ${JSON.stringify(join(dir, "key.pem"))}`],
    ["passkey_threshold_fen = 100000", `passkey_threshold_fen = ${PASSKEY_THRESHOLD_FEN}`],
  ];
  let text = readFileSync(join(root, "examples/wxpay.toml"), "utf8");
  for (const [from, to] of replacements) {
    if (!text.includes(from)) throw new Error(`examples/wxpay.toml no longer has ${from}`);
    text = text.replaceAll(from, to);
  }
  return text;
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "wxpay-console-"));
  const [simPort, publicPort, agentPort, attackerPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  // Refunds need the merchant's client certificate; the simulator on plain
  // HTTP does not check it, but the gateway will not send a refund without one.
  const certified = await promisify(execFile)("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-subj", "/CN=10000100", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ]).then(() => true, (e) => String(e));
  if (certified !== true) throw new Error(`openssl could not make a client certificate: ${certified}`);
  const config = join(dir, "wxpay.toml");
  writeFileSync(config, configText(dir, simPort, publicPort, agentPort));
  const origin = `http://localhost:${agentPort}`;
  const agentApi = `http://127.0.0.1:${agentPort}`;
  const simulator = `http://127.0.0.1:${simPort}`;

  const merchants = join(dir, "merchants.toml");
  writeFileSync(merchants, `[[merchants]]\nappid = "wxd930ea5d5a258f4f"\nmch_id = "10000100"\napi_key = "${KEY}"\n`);
  start(["simulate", "--listen", `127.0.0.1:${simPort}`, "--merchant-config", merchants], "simulator");
  await waitFor("the simulator", async () => (await fetch(`${simulator}/admin/scenarios`)).ok);
  const gateway = start(["serve", "-c", config, "--no-probe"], "gateway");
  await waitFor("the gateway", async () => (await fetch(`${origin}/console/sign-in`)).ok);

  const added = await run([
    "agents", "-c", config, "add", "bot", "--products", "tea,credits-100",
    "--capabilities", "create,read,refund,charge",
    "--cap-fen", "100000", "--daily-budget-fen", "1000000", "--approval-threshold-fen", "1000",
  ]);
  const token = added.stdout.trim();
  check("an agent is added", added.code === 0 && token.length > 0, added.stderr);
  const agent = async (method, path, body) => {
    const response = await fetch(`${agentApi}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: response.status, body: await response.json() };
  };
  const pay = (key, quantity) =>
    agent("POST", "/v1/payments", { product_id: "tea", quantity, idempotency_key: key });

  const invited = await run(["operators", "-c", config, "invite", "alice"]);
  const inviteUrl = invited.stdout.trim();
  check(
    "`wxpay operators invite` prints a one-time link with the token in its fragment",
    invited.code === 0 && inviteUrl.startsWith(`${origin}/console/register#wxpi_`),
    inviteUrl + invited.stderr,
  );

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    currentPage = page;
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable");
    await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

    // Register a passkey with the invite.
    await page.goto(inviteUrl);
    await shot("01-register");
    await page.getByRole("button", { name: "Create my passkey" }).click();
    await page.waitForURL(/\/console\/approvals$/);
    check("registering a passkey signs the operator in", (await page.locator("h1").textContent()) === "Approvals");
    const cookie = (await context.cookies()).find((c) => c.name === "wxpay_console");
    check(
      "the session cookie is HttpOnly and SameSite=Strict",
      cookie && cookie.httpOnly && cookie.sameSite === "Strict" && cookie.path === "/console",
      JSON.stringify(cookie),
    );

    // The invite works once.
    const second = await context.newPage();
    await second.goto(inviteUrl);
    await second.getByRole("button", { name: "Create my passkey" }).click();
    await second.locator("#ceremony-error").filter({ hasText: /./ }).waitFor();
    check(
      "an invite link works only once",
      /unknown, expired or already used/.test(await second.locator("#ceremony-error").textContent()),
    );
    await second.close();

    // Sign out, then sign in with the passkey.
    await page.getByRole("button", { name: "Sign out alice" }).click();
    await page.waitForURL(/\/console\/sign-in$/);
    await page.getByLabel("Operator name").fill("alice");
    await shot("02-sign-in");
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await page.waitForURL(/\/console\/approvals$/);
    check("the operator signs in with the passkey", (await page.locator("h1").textContent()) === "Approvals");

    // A high-value payment appears live.
    await page.waitForFunction(() => document.body.dataset.live === "connected");
    await page.evaluate(() => {
      window.sameDocument = true;
    });
    const big = await pay("big-1", 10);
    check("a 120-yuan payment waits for approval", big.body.status === "pending_approval", JSON.stringify(big.body));
    const bigId = big.body.payment_id;
    const approveBig = page.getByRole("button", { name: "Approve ¥120.00 with passkey" });
    await approveBig.waitFor({ timeout: 15_000 });
    check(
      "the pending payment appears without reloading the page (server-sent events)",
      await page.evaluate(() => window.sameDocument === true),
    );
    check("the page links the pending payment", (await page.getByRole("link", { name: bigId }).count()) === 1);
    await shot("03-pending-live");

    // Approve it with the passkey; keep the assertion to replay it later.
    let finishBody = null;
    page.on("request", (request) => {
      if (request.url().endsWith(`/passkey/finish`) && finishBody === null) finishBody = request.postData();
    });
    await approveBig.click();
    const dialog = page.locator("dialog#passkey-dialog");
    await dialog.waitFor();
    const context_ = await dialog.locator(".ceremony-context").textContent();
    check(
      "the passkey ceremony shows the payment id and the amount",
      context_.includes(bigId) && context_.includes("¥120.00") && context_.includes("12000 fen"),
      context_,
    );
    await shot("04-ceremony-context");
    await dialog.getByRole("button", { name: "Approve ¥120.00" }).click();
    await page.waitForURL(/done=/);
    check(
      "the console reports the approval",
      /approved with a passkey/.test(await page.locator(".notice").textContent()),
    );
    const afterApproval = await agent("GET", `/v1/payments/${bigId}`);
    check(
      "the approved payment proceeds to WeChat Pay and waits for the customer",
      afterApproval.body.status === "payment_pending" && afterApproval.body.code_url,
      afterApproval.body.status,
    );

    // The customer pays; the payment page updates live.
    await page.goto(`${origin}/console/payments/${bigId}`);
    await page.waitForFunction(() => document.body.dataset.live === "connected");
    await page.evaluate(() => {
      window.sameDocument = true;
    });
    const paid = await fetch(`${simulator}/admin/pay`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ out_trade_no: bigId }),
    });
    check("the simulator pays the order", paid.ok, await paid.text());
    const shownPaid = await page
      .locator("dd .state", { hasText: "paid" })
      .waitFor({ timeout: 20_000 })
      .then(() => page.evaluate(() => window.sameDocument === true))
      .catch(() => false);
    check("the payment page shows it paid when the callback lands, without a reload", shownPaid);
    check(
      "the payment's history shows the passkey approval and the callback",
      (await page.locator("table", { hasText: "Callbacks from WeChat Pay" }).textContent()).includes("notification.payment"),
    );
    await shot("05-paid");

    // A replayed assertion is refused.
    const csrf = await page.locator('meta[name="csrf-token"]').getAttribute("content");
    const post = (path, body, token_ = csrf) =>
      page.evaluate(
        async ({ path, body, token_ }) => {
          const r = await fetch(path, {
            method: "POST",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": token_ },
            body,
          });
          return { status: r.status, text: await r.text() };
        },
        { path, body, token_ },
      );
    const replay = await post(`/console/api/approvals/${big.body.approval.id}/passkey/finish`, finishBody);
    check(
      "replaying the approval's assertion is refused",
      replay.status === 403 && replay.text.includes("already used"),
      JSON.stringify(replay),
    );
    const other = await pay("big-2", 8);
    const otherId = other.body.payment_id;
    const otherApproval = other.body.approval.id;
    const fresh = await post(`/console/api/approvals/${otherApproval}/passkey/start`, "{}");
    const freshCeremony = JSON.parse(fresh.text).ceremony;
    const spliced = JSON.parse(finishBody);
    spliced.ceremony = freshCeremony;
    const replayed = await post(
      `/console/api/approvals/${otherApproval}/passkey/finish`,
      JSON.stringify(spliced),
    );
    const stillPending = await agent("GET", `/v1/payments/${otherId}`);
    check(
      "an old assertion is refused for a new ceremony, and nothing is approved",
      replayed.status === 403 && stillPending.body.status === "pending_approval",
      JSON.stringify(replayed) + JSON.stringify(stillPending.body),
    );

    // Deny the other one with a reason.
    await page.goto(`${origin}/console/approvals`);
    const row = page.locator("tr", { hasText: otherId });
    await row.getByLabel("Reason").fill("not a customer we know");
    await row.getByRole("button", { name: `Deny #${otherApproval}` }).click();
    await page.waitForURL(/done=/);
    const denied = await agent("GET", `/v1/payments/${otherId}`);
    check(
      "a denial reaches the agent with its reason",
      denied.body.status === "denied" && JSON.stringify(denied.body).includes("not a customer we know"),
      JSON.stringify(denied.body),
    );
    await shot("06-denied");

    // Cross-site requests are refused.
    const small = await pay("small-1", 2);
    const smallApproval = small.body.approval.id;
    const attacker = createServer((_, response) => {
      response.setHeader("Content-Type", "text/html");
      response.end(
        `<form id="f" method="post" action="${origin}/console/approvals/${smallApproval}/approve">` +
          `<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>`,
      );
    });
    await new Promise((r) => attacker.listen(attackerPort, "127.0.0.1", r));
    const attack = await context.newPage();
    const attacked = attack.waitForResponse((r) => r.url().includes(`/approvals/${smallApproval}/approve`));
    await attack.goto(`http://127.0.0.1:${attackerPort}/`);
    const answer = await attacked;
    await attack.waitForLoadState();
    await attack.screenshot({ path: join(shots, "07-csrf-refused.png"), fullPage: true });
    await attack.close();
    attacker.close();
    const sameSite = await page.evaluate(async (path) => {
      const r = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: "csrf=wrong",
      });
      return { status: r.status, text: await r.text() };
    }, `/console/approvals/${smallApproval}/approve`);
    const smallAfter = await agent("GET", `/v1/payments/${small.body.payment_id}`);
    check(
      "a cross-site form post and a request with a wrong CSRF token are refused; nothing is approved",
      answer.status() === 403 && sameSite.status === 403 && smallAfter.body.status === "pending_approval",
      `${answer.status()} ${JSON.stringify(sameSite)} ${smallAfter.body.status}`,
    );

    // Below the threshold a signed-in operator approves without a passkey;
    // above it the CLI is refused.
    await page.goto(`${origin}/console/approvals`);
    await page.getByRole("button", { name: "Approve ¥24.00" }).click();
    await page.waitForURL(/done=/);
    const smallApproved = await agent("GET", `/v1/payments/${small.body.payment_id}`);
    check(
      "a small approval needs only the session",
      smallApproved.body.status === "payment_pending",
      smallApproved.body.status,
    );
    const huge = await pay("big-3", 9);
    const cli = await run(["approvals", "-c", config, "approve", String(huge.body.approval.id)]);
    const hugeAfter = await agent("GET", `/v1/payments/${huge.body.payment_id}`);
    check(
      "`wxpay approvals approve` is refused above the passkey threshold",
      cli.code !== 0 && cli.stderr.includes("passkey threshold") && hugeAfter.body.status === "pending_approval",
      cli.stderr,
    );

    // A top-up, a charge and a refund, for the balance and refund pages.
    const topup = await agent("POST", "/v1/balances/user-1/topups", { amount_fen: 1000, idempotency_key: "t1" });
    await fetch(`${simulator}/admin/pay`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ out_trade_no: topup.body.payment_id }),
    });
    await waitFor("the top-up", async () => (await agent("GET", "/v1/balances/user-1")).body.balance_fen === 1000);
    const charged = await agent("POST", "/v1/charges", {
      payer_id: "user-1",
      amount_fen: 300,
      idempotency_key: "c1",
      note: "one long answer",
    });
    check("the agent charges the balance", charged.status === 200, JSON.stringify(charged.body));
    const refund = await agent("POST", `/v1/payments/${bigId}/refunds`, {
      idempotency_key: "r1",
      amount_fen: 600,
      reason: "one tea was cold",
    });
    check("a refund waits for approval", refund.body.status === "pending_approval", JSON.stringify(refund.body));
    await page.goto(`${origin}/console/approvals`);
    await page.getByRole("button", { name: "Approve ¥6.00" }).click();
    await page.waitForURL(/done=/);
    const refundAfter = await agent("GET", `/v1/payments/${bigId}/refunds/${refund.body.refund_id}`);
    check(
      "the approved refund goes to WeChat Pay",
      ["processing", "succeeded"].includes(refundAfter.body.status),
      JSON.stringify(refundAfter.body),
    );

    // Every page: one heading, labelled fields, the current page marked.
    const pages = [
      ["payments", bigId, "09-payments"],
      ["payments?state=paid", topup.body.payment_id, "10-payments-paid"],
      ["refunds", refund.body.refund_id, "11-refunds"],
      [`payments/${bigId}`, refund.body.refund_id, "11-payment-with-refund"],
      ["balances", "user-1 — balance ¥7.00", "12-balances"],
      ["balances?q=user-1", "one long answer", "12-balances-search"],
      ["agents", "bot", "13-agents"],
    ];
    for (const [path, expected, name] of pages) {
      await page.goto(`${origin}/console/${path}`);
      const facts = await page.evaluate(() => ({
        headings: document.querySelectorAll("h1").length,
        unlabelled: [...document.querySelectorAll("input:not([type=hidden]), select")].filter(
          (el) => !el.labels || el.labels.length === 0,
        ).length,
        current: document.querySelector('nav [aria-current="page"]')?.textContent ?? "",
        text: document.body.innerText,
      }));
      check(
        `/console/${path} shows ${expected}, with one heading and every field labelled`,
        facts.headings === 1 && facts.unlabelled === 0 && facts.current !== "" && facts.text.includes(expected),
        JSON.stringify({ ...facts, text: facts.text.slice(0, 300) }),
      );
      await shot(name);
    }
    await page.goto(`${origin}/console/payments?state=paid`);
    check(
      "the state filter leaves out payments in other states",
      !(await page.locator("main").innerText()).includes(bigId),
    );
    const agentRow = page.locator("tr", { hasText: "bot" });
    await page.goto(`${origin}/console/agents`);
    // 120 + 24 yuan approved, the 10-yuan top-up, and 108 awaiting approval
    // (held); the denied 96 is not spend.
    check(
      "the agents page shows the grant and the day's spend",
      /active/.test(await agentRow.innerText()) && /¥262\.00 of ¥10,000\.00/.test(await agentRow.innerText()),
      await agentRow.innerText(),
    );

    // The audit log records who approved, and how.
    await page.goto(`${origin}/console/audit?actor=operator%3A`);
    const byOperators = await page.locator("tbody tr").allInnerTexts();
    check(
      "the audit log filters by actor",
      byOperators.length > 0 && byOperators.every((row) => row.includes("operator:")),
      byOperators.join(" | "),
    );
    await page.goto(`${origin}/console/audit?q=${encodeURIComponent('"passkey":true')}`);
    check(
      "the audit log page finds the passkey approval",
      (await page.locator("tbody tr", { hasText: "approval.approve" }).count()) === 1,
    );
    await shot("08-audit");

    // Removing the operator ends the session at once.
    const removed = await run(["operators", "-c", config, "remove", "alice"]);
    await page.goto(`${origin}/console/approvals`);
    check(
      "`wxpay operators remove` ends the operator's session",
      removed.code === 0 && removed.stderr.includes("1 session(s) ended") && page.url().endsWith("/console/sign-in"),
      `${removed.stderr} ${page.url()}`,
    );
  } catch (e) {
    if (currentPage) {
      console.log(`--- page ${currentPage.url()} ---`);
      console.log((await currentPage.locator("body").innerText().catch(() => "")).slice(0, 2000));
      await currentPage.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    }
    throw e;
  } finally {
    await browser.close();
  }

  for (const child of children) child.kill("SIGTERM");
  if (failed > 0) {
    console.log(`--- gateway log ---\n${gateway.log()}`);
  }
  rmSync(dir, { recursive: true, force: true });
  console.log(`${passed} passed, ${failed} failed; screenshots in ${shots}`);
  process.exitCode = failed > 0 ? 1 : 0;
}

main().catch((e) => {
  console.log(`FAIL ${e.stack ?? e}`);
  for (const child of children) {
    console.log(`--- ${child.name} log ---\n${child.log()}`);
    child.kill("SIGTERM");
  }
  process.exitCode = 1;
});
