// Drive JupyterLab in headless Chromium: open the notebook, run all cells, interact with
// both widgets and report what the page shows (one JSON object on the last stdout line).
// Input (JSON on stdin): { url, token, notebook, expected (path written by the notebook),
// screenshots: { page, attention, hidden }, timeout_ms }.
const fs = require("fs");
const { runDriver } = require("./chromium.cjs");

async function waitForFile(path, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} not written within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return JSON.parse(fs.readFileSync(path, "utf8"));
}

const texts = (page, selector) =>
  page.$$eval(selector, (nodes) => nodes.map((n) => n.textContent));

runDriver("drive_lab", async (input, { context, blocked, log }) => {
  const errors = [];
  const report = { blocked, errors };
  let page;
  try {
    page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") log(`console error: ${m.text().slice(0, 500)}`); });
    page.on("dialog", (d) => { errors.push(`dialog: ${d.message()}`); d.dismiss(); });
    page.setDefaultTimeout(30000);

    await page.goto(`${input.url}/lab/tree/${input.notebook}?token=${input.token}`);
    await page.locator(".jp-NotebookPanel .jp-Notebook").waitFor({ timeout: 90000 });
    log("notebook open");
    await page.waitForFunction(() => [...document.querySelectorAll(".jp-StatusBar-TextItem")]
      .some((n) => /^(?!No Kernel).+ \| Idle$/.test(n.textContent.trim())), null, { timeout: 90000 });
    log("kernel idle");

    // Run > Run All Cells, again if the kernel was not connected yet and nothing started
    for (let attempt = 1; ; attempt++) {
      await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Run$/ }).click();
      await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).click();
      const kernelDialog = page.locator(".jp-Dialog", { hasText: "Select Kernel" });
      if (await kernelDialog.isVisible({ timeout: 1000 }).catch(() => false)) {
        await kernelDialog.locator(".jp-Dialog-button.jp-mod-accept").click();
      }
      const started = await page.waitForFunction(() =>
        [...document.querySelectorAll(".jp-CodeCell .jp-InputPrompt")].some((p) => /\[(\*|\d+)\]/.test(p.textContent)),
      null, { timeout: 10000 }).then(() => true, () => false);
      if (started) break;
      if (attempt === 6) throw new Error("Run All Cells started nothing");
      log(`run all: nothing started (attempt ${attempt}), retrying`);
    }
    log("running all cells");
    const expected = await waitForFile(input.expected, input.timeout_ms);
    log("cells ran");
    const attention = page.locator(".sl-attention");
    await attention.locator(".sl-cell").first().waitFor({ timeout: 30000 });
    await page.locator(".sl-hidden .sl-tok").first().waitFor({ timeout: 30000 });
    const exp = expected.attention;

    // the labels as rendered
    report.sourceLabels = await texts(page, ".sl-attention .sl-src");
    report.targetLabels = await texts(page, ".sl-attention .sl-tgt");
    report.cellCount = await page.locator(".sl-attention .sl-cell").count();

    // hover the strongest cell: its source and target tokens light up, the weight shows
    const [i, j] = exp.cell;
    const cell = attention.locator(`.sl-cell[data-i="${i}"][data-j="${j}"]`);
    await cell.scrollIntoViewIfNeeded();
    await cell.hover();
    report.cellHover = {
      source: await texts(page, ".sl-attention .sl-src.sl-active"),
      target: await texts(page, ".sl-attention .sl-tgt.sl-active"),
      cells: await page.locator(".sl-attention .sl-cell.sl-active").count(),
      readout: await attention.locator(".sl-readout").textContent(),
    };
    await attention.screenshot({ path: input.screenshots.attention });

    // hover the <script> source token: the targets attending to it (weight >= 0.1) are linked
    const scriptColumn = exp.source.findIndex((t) => t.startsWith("<script>"));
    await attention.locator(`.sl-src[data-j="${scriptColumn}"]`).hover();
    report.sourceHover = {
      column: scriptColumn,
      active: await texts(page, ".sl-attention .sl-src.sl-active"),
      linked: await page.$$eval(".sl-attention .sl-tgt.sl-linked", (ns) => ns.map((n) => Number(n.dataset.i))),
    };

    // step slider: reveal two target tokens
    await attention.locator(".sl-step").evaluate((input) => {
      input.value = "2";
      input.dispatchEvent(new Event("input", { bubbles: true }));
    });
    report.step = {
      future: await page.locator(".sl-attention .sl-tgt.sl-future").count(),
      text: await attention.locator(".sl-step-text").textContent(),
    };

    // sentence selector: the second sentence's best hypothesis, then back
    await attention.locator("select.sl-sentence").selectOption("1");
    await page.waitForFunction(() => document.querySelector("select.sl-hypothesis")?.value === "0");
    report.secondSentence = {
      source: await texts(page, ".sl-attention .sl-src"),
      target: await texts(page, ".sl-attention .sl-tgt"),
      hypotheses: await texts(page, ".sl-attention select.sl-hypothesis option"),
    };
    await attention.locator("select.sl-sentence").selectOption("0");

    // hidden-state explorer: hover a token, read the units most active there; pick one
    const hidden = page.locator(".sl-hidden");
    report.hiddenTokens = await texts(page, ".sl-hidden .sl-tok");
    report.hiddenSeries = await texts(page, ".sl-hidden select.sl-series option");
    const token = 2;
    await hidden.locator(`.sl-tok[data-t="${token}"]`).hover();
    await page.waitForFunction((t) =>
      document.querySelector(".sl-hidden .sl-top-title")?.textContent.includes(
        document.querySelectorAll(".sl-hidden .sl-tok")[t].textContent), token);
    report.hiddenTop = {
      token,
      units: await page.$$eval(".sl-hidden .sl-top-unit", (ns) => ns.map((n) => Number(n.dataset.unit))),
    };
    const pick = report.hiddenTop.units[1];
    await hidden.locator(`.sl-top-unit[data-unit="${pick}"]`).click();
    report.unitPicked = { unit: pick, input: await hidden.locator("input.sl-unit").inputValue(),
      readout: await hidden.locator(".sl-readout").textContent() };
    await hidden.screenshot({ path: input.screenshots.hidden });

    // injected markup stayed text: no element from a token, no script ran
    report.injection = await page.evaluate(() => ({
      xss: typeof window.__xss,
      elements: document.querySelectorAll(".sl-widget script, .sl-widget img, .sl-widget b").length,
    }));

    // save (outputs stay in the file for the nbconvert test), then the whole page
    await page.locator(".lm-MenuBar-itemLabel", { hasText: /^File$/ }).click();
    await page.locator(".lm-Menu-itemLabel", { hasText: /^Save( Notebook)?$/ }).first().click();
    await page.waitForFunction(() => !document.querySelector(".jp-NotebookPanel.jp-mod-dirty, .lm-TabBar-tab.jp-mod-dirty"),
      null, { timeout: 30000 });
    await attention.scrollIntoViewIfNeeded();
    await page.screenshot({ path: input.screenshots.page });
    report.ok = true;
    log("done");
  } catch (error) {
    // leave evidence: what the page looked like and what the cells printed
    if (page) {
      await page.screenshot({ path: input.screenshots.page.replace(/\.png$/, "-failure.png") }).catch(() => {});
      const outputs = await texts(page, ".jp-OutputArea-output").catch(() => []);
      log(`outputs at failure:\n${outputs.join("\n---\n").slice(-4000)}`);
    }
    throw error;
  }
  return report;
});
