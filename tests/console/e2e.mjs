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
    "agents", "-c", config, "add", "bot", "--products", "tea",
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
    args: ["--no-sandbox"],
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

    // The audit log records who approved, and how.
    await page.goto(`${origin}/console/audit?q=${encodeURIComponent('"passkey":true')}`);
    check(
      "the audit log page finds the passkey approval",
      (await page.locator("tbody tr", { hasText: "approval.approve" }).count()) === 1,
    );
    await shot("08-audit");
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
