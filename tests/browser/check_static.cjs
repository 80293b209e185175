// Load an nbconvert HTML export from disk with every non-local request refused, and
// report the widgets' static fallbacks (one JSON object on the last stdout line).
// Input (JSON on stdin): { page, screenshot }.
const { runDriver } = require("./chromium.cjs");

runDriver("check_static", async (input, { context, blocked }) => {
  const report = { blocked };
  const page = await context.newPage();
  await page.goto(`file://${input.page}`, { waitUntil: "load", timeout: 60000 });
  await page.waitForTimeout(500); // let the page's own scripts fail or finish
  Object.assign(report, await page.evaluate(() => {
    const svgs = [...document.querySelectorAll(".seqlearn-static svg")];
    return {
      svgs: svgs.length,
      sizes: svgs.map((s) => { const b = s.getBoundingClientRect(); return [b.width, b.height]; }),
      texts: svgs.flatMap((s) => [...s.querySelectorAll("text")].map((t) => t.textContent)),
      injection: {
        xss: typeof window.__xss,
        elements: document.querySelectorAll(".seqlearn-static script, .seqlearn-static img").length,
      },
    };
  }));
  const first = page.locator(".seqlearn-static").first();
  await first.scrollIntoViewIfNeeded();
  await page.screenshot({ path: input.screenshot });
  return report;
});
