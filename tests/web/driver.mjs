// A headless Chromium puppet for tests/web_companion.rs: reads one JSON command a line on
// stdin, answers one JSON line on stdout ({"ok":true,"value":…} or {"ok":false,"error":…}).
// The Rust test decides what to do and what to expect; this file only operates the browser.
//
// Chromium is Debian's (/usr/bin/chromium), launched with the flags this machine's closed
// network needs, and a fresh profile each run. Never `npx playwright install`.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const profile = mkdtempSync(join(tmpdir(), 'relaybox-chromium-'));
let context = null;
let page = null;
const consoleLines = [];

async function open(url) {
  const t = Date.now();
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 700 },
  });
  page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => d.accept());
  await page.goto(url);
  return Date.now() - t;
}

const commands = {
  open: (c) => open(c.url),
  goto: async (c) => { await page.goto(c.url); return null; },
  eval: (c) => page.evaluate(c.js),
  // Polls with page.evaluate (a DevTools evaluation, outside the page's CSP); Playwright's
  // waitForFunction would compile the string inside the page, which the strict CSP forbids.
  wait: async (c) => {
    const t = Date.now();
    const limit = c.timeout_ms || 20000;
    let last = null;
    for (;;) {
      try {
        if (await page.evaluate(c.js)) return Date.now() - t;
      } catch (e) { last = e; }
      if (Date.now() - t > limit) throw new Error(`timed out after ${limit} ms waiting for ${c.js}${last ? ` (last error: ${last.message})` : ''}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  },
  fill: async (c) => { await page.fill(c.selector, c.text); return null; },
  click: async (c) => { await page.click(c.selector); return null; },
  dblclick: async (c) => { await page.dblclick(c.selector); return null; },
  press: async (c) => { await page.press(c.selector, c.key); return null; },
  reload: async () => { const t = Date.now(); await page.reload(); return Date.now() - t; },
  screenshot: async (c) => { await page.screenshot({ path: c.path }); return null; },
  console: async () => consoleLines.splice(0),
  close: async () => { if (context) await context.close(); context = null; return null; },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let reply;
  try {
    const c = JSON.parse(line);
    const f = commands[c.cmd];
    if (!f) throw new Error(`unknown command ${c.cmd}`);
    reply = { ok: true, value: (await f(c)) ?? null };
  } catch (e) {
    reply = { ok: false, error: String(e && e.stack ? e.stack : e), console: consoleLines.splice(0) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
if (context) await context.close();
rmSync(profile, { recursive: true, force: true });
