// Headless Debian Chromium through playwright-core, offline: every request that is not
// to 127.0.0.1 or a local file is aborted and recorded.
const { chromium } = require(process.env.SEQLEARN_PLAYWRIGHT_CORE || "playwright-core");

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage",
];

async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.SEQLEARN_CHROMIUM || "/usr/bin/chromium",
    args: FLAGS,
    headless: true,
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const blocked = [];
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    const local = ["file:", "data:", "blob:"].includes(url.protocol) || url.hostname === "127.0.0.1";
    if (local) return route.continue();
    blocked.push(route.request().url());
    return route.abort();
  });
  return { browser, context, blocked };
}

// Run a driver: its input is JSON on stdin; `body(input, { context, blocked, log })`
// returns the report, printed as the last stdout line.  The browser is closed whatever
// happens; a failure prints its stack and exits 1.
function runDriver(name, body) {
  (async () => {
    let data = "";
    for await (const chunk of process.stdin) data += chunk;
    const input = JSON.parse(data);
    const { browser, context, blocked } = await launch();
    const started = Date.now();
    const log = (what) => console.error(`[${name} ${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);
    let report;
    try {
      report = await body(input, { context, blocked, log });
    } finally {
      await browser.close();
    }
    console.log(JSON.stringify(report));
  })().catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
}

module.exports = { launch, runDriver, FLAGS };
