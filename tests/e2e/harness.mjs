// What every browser walk shares: Debian's Chromium (headless, via playwright-core), a
// watch that records any console error, wasm panic, HTTP error or failed request, and the
// end of a walk (a screenshot and a non-zero exit on the first failed step).
import { chromium } from 'playwright-core';

export const launchBrowser = () => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// Records into `problems` what fails the step it happens in. Requests the browser itself
// cancels (Stop, Esc, a reload mid-preview) may end early.
export const watchPage = (p, problems) => {
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // A failed load is caught below with its URL (the browser's own favicon probe aside).
  p.on('console', (m) => { if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`); });
  p.on('requestfailed', (r) => {
    if (!/ERR_ABORTED/.test(r.failure()?.errorText || '')) problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  p.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`); });
};

// Runs a walk's steps; the last step checks that the browser saw no error. On a failure:
// a screenshot named `failure`, the step and the errors on stderr, exit 1.
export const runWalk = async (label, steps, { browser, problems, begin, expect, shot, step, failure }) => {
  try {
    await steps();
    begin('no errors in the browser');
    expect(problems.length === 0, problems.join('\n'));
    console.log(`${label}: all steps passed`);
  } catch (e) {
    await shot(failure).catch(() => {});
    console.error(`step "${step()}": ${e.message}`);
    if (problems.length) console.error(problems.join('\n'));
    await browser.close();
    process.exit(1);
  }
  await browser.close();
};
