// Loads test pages in Debian's headless chromium (playwright-core drives the installed
// /usr/bin/chromium; no browser is downloaded) and prints what each page published in
// `window.__results`: `node browser.mjs '<json>'`.
//
// Arguments (one JSON object):
//   pages       URLs to open, one after the other, each in a fresh context
//   certs       PEM files of the (self-signed) certificates the pages and the proxy
//               present; chromium accepts exactly these, by SPKI hash
//   timeoutMs   how long to wait for one page's results (default 60000)
//   chromium    the browser binary (default /usr/bin/chromium)
//
// Output: one line {"pages": [{url, results, console, errors}]}; exit code 0, or 2 when
// the browser could not run (stderr says why).
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";

/** base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate of a PEM file. */
function spkiHash(pemFile) {
  const cert = new X509Certificate(readFileSync(pemFile));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

async function openPage(browser, url, timeoutMs) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleLines = [];
  const errors = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  try {
    await page.goto(url, { timeout: timeoutMs });
    await page.waitForFunction(() => window.__results !== undefined, null, { timeout: timeoutMs });
    const results = await page.evaluate(() => window.__results);
    const status = await page.textContent("#status");
    return { url, status, results, console: consoleLines, errors };
  } catch (e) {
    return { url, results: null, failure: String(e), console: consoleLines, errors };
  } finally {
    await context.close();
  }
}

async function main() {
  const args = JSON.parse(process.argv[2] ?? "");
  const executablePath = args.chromium ?? "/usr/bin/chromium";
  if (!existsSync(executablePath)) {
    throw new Error(
      `${executablePath} is missing: install Debian's chromium ` +
        "(apt-get install -y --no-install-recommends chromium; scripts/test does)",
    );
  }
  const spki = (args.certs ?? []).map(spkiHash).join(",");
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Test host names (web.test, grpc.test) resolve to loopback; ports are kept.
      "--host-resolver-rules=MAP * 127.0.0.1",
      `--ignore-certificate-errors-spki-list=${spki}`,
    ],
  });
  try {
    const pages = [];
    for (const url of args.pages) pages.push(await openPage(browser, url, args.timeoutMs ?? 60000));
    process.stdout.write(JSON.stringify({ version: browser.version(), pages }) + "\n");
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`browser.mjs: ${e?.stack ?? e}\n`);
    process.exit(2);
  },
);
