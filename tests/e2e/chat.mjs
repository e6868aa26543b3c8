// Chat mode in a real browser (Debian's Chromium via playwright-core), against a running
// `studio serve --model smollm2-135m` (a model with a chat template).
// Usage: node chat.mjs BASE_URL OUT_DIR
// Playground in chat mode: system prompt, one example turn, the user's message with a
// variable; the preview is the model's own chat template; a streamed run; saved as a chat
// version; View code and the endpoint `/v1/templates/{name}@1/chat/completions`.
import { launchBrowser, runWalk, watchPage } from './harness.mjs';
import fs from 'node:fs';
import path from 'node:path';

const [base, outDir] = process.argv.slice(2);
fs.mkdirSync(outDir, { recursive: true });
const browser = await launchBrowser();
const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
const problems = [];
watchPage(page, problems);

let step = 'start';
const expect = (cond, msg) => { if (!cond) throw new Error(`${step}: ${msg}`); };
const begin = (name) => { expect(problems.length === 0, `errors in the browser:\n${problems.join('\n')}`); step = name; };
const shot = async (name) => {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
};
const hydrated = async () => page.waitForSelector('span.hydration[data-ready="true"]', { state: 'attached', timeout: 30000 });
const preview = async () => (await page.textContent('[data-testid=prompt-preview]')) || '';

await runWalk('chat e2e', async () => {
  begin('chat mode: system prompt, an example turn and the user\'s message');
  await page.goto(`${base}/`);
  await hydrated();
  await page.waitForFunction(() => !document.querySelector('[data-testid=mode-chat]').disabled, null, { timeout: 15000 });
  await page.click('[data-testid=mode-chat]');
  await page.waitForFunction(() => document.querySelector('[data-testid=mode-chat]').getAttribute('aria-pressed') === 'true', null, { timeout: 5000 });
  expect((await page.textContent('.design')).includes('System prompt'), 'chat mode does not name the system prompt');
  expect(await page.locator('text=Format: separators and prefixes').count() === 0, 'chat mode still offers the completion format');
  await page.fill('[data-testid=title]', 'Movie helper (e2e chat)');
  await page.fill('[data-testid=instruction]', 'You are a friendly movie assistant. Answer in one short sentence.');
  await page.click('[data-testid=add-example]');
  await page.locator('[data-testid=example-input]').nth(0).fill('Is Titanic a long movie?');
  await page.locator('[data-testid=example-output]').nth(0).fill('Yes, it runs a little over three hours.');
  await page.fill('[data-testid=input-pattern]', 'Tell me about {{movie}}.');
  await page.waitForSelector('[data-testid=variable][data-name="movie"]', { timeout: 15000 });
  await page.fill('[data-testid=variable][data-name="movie"]', 'The Matrix');
  await page.fill('[data-testid="parameters.max_tokens"]', '24');
  await page.waitForFunction(() => document.querySelector('[data-testid=prompt-preview]').textContent.includes('Tell me about The Matrix.'), null, { timeout: 15000 });
  const p = await preview();
  expect(p.startsWith('<|im_start|>system\nYou are a friendly movie assistant.'), `the preview is not the model's chat template: ${p.slice(0, 120)}`);
  expect(p.includes('<|im_start|>assistant\nYes, it runs a little over three hours.<|im_end|>'), 'the example turn is not in the preview');
  expect(p.trimEnd().endsWith('<|im_start|>assistant'), 'the preview does not end with the assistant\'s turn');
  expect(await page.inputValue('[data-testid="parameters.stop"]') === '', 'chat mode kept the line-break stop');

  begin('chat mode: a streamed run');
  await page.click('[data-testid=run]');
  await page.waitForSelector('[data-testid=token-view] .tok', { timeout: 60000 });
  await page.waitForSelector('[data-testid=run]', { timeout: 60000 });
  const answer = (await page.textContent('[data-testid=token-view]')).trim();
  expect(answer.length > 0 && !answer.includes('<|im_'), `the answer is empty or shows the template's markers: ${answer}`);
  await shot('11-chat-1280');
  await page.setViewportSize({ width: 800, height: 900 });
  await page.waitForTimeout(200);
  await shot('11-chat-800');
  await page.setViewportSize({ width: 1280, height: 900 });

  begin('chat mode: saved as a chat version, called at its chat endpoint');
  await page.click('[data-testid=save-open]');
  await page.fill('[data-testid=save-name]', 'chat-e2e');
  await page.click('[data-testid=save-new]');
  await page.waitForURL(/\/t\/chat-e2e$/, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('[data-testid=version-badge]').textContent.includes('version 1'), null, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('[data-testid=mode-chat]').getAttribute('aria-pressed') === 'true', null, { timeout: 15000 });
  const saved = await (await page.request.get(`${base}/api/templates/chat-e2e/versions/1`)).json();
  expect(saved.version?.spec?.mode === 'chat', `the saved version is not a chat version: ${JSON.stringify(saved).slice(0, 200)}`);
  await page.click('[data-testid=code-open]');
  const code = await page.textContent('[data-testid=code]');
  expect(code.includes('/v1/templates/chat-e2e@1/chat/completions'), 'View code does not call the chat endpoint');
  const r = await page.request.post(`${base}/v1/templates/chat-e2e@1/chat/completions`, { data: { messages: [], variables: { movie: 'The Matrix' } } });
  const body = await r.json();
  expect(r.status() === 200 && body.object === 'chat.completion' && body.choices[0].message.role === 'assistant', `the chat endpoint answered ${r.status()} ${JSON.stringify(body).slice(0, 200)}`);
  expect(body.choices[0].message.content.trim() === answer, `the endpoint's answer ${JSON.stringify(body.choices[0].message.content)} is not the playground's ${JSON.stringify(answer)}`);
  await shot('11b-chat-saved');
}, { browser, problems, begin, expect, shot, step: () => step, failure: 'chat-failure' });
