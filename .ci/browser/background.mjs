// Training in a tab the visitor left for another one (src/app/web_distill/runner.rs
// `yield_to_page`). Headless Chromium never hides a page (a second tab brought to the front
// leaves the first one 'visible', its timers and frames running: measured 2026-12-03), so the
// test makes the page behave as a tab hidden for minutes does in Chrome: document.visibilityState
// 'hidden', no animation frames, and every timer clamped to a minute ("intensive wake-up
// throttling"; after the first minutes it is one a second). An init script installs that before
// the page's own scripts; `window.__fewstepHide(on)` flips it.
// Checks, on ?train=tiny (a teacher from scratch in the Train tab):
//  - hidden, the run makes at least half the updates per second it made visible (a loop that
//    waited on a timer after each update would make one a minute);
//  - while visible the page drew frames (the run does not block it);
//  - no timer was set while hidden (none sits in the update loop);
//  - the run finishes once the page is visible again.
// Usage: node .ci/browser/background.mjs   (FEWSTEP_SITE=DIR serves a built site)
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

// Updates measured in each phase, after WARMUP (the first updates compile the pipelines).
const WARMUP = 2, MEASURED = 3;
// Longest wait for the hidden phase's updates: 3 updates take ~15 s on SwiftShader here; a
// timer-bound loop would need 3 minutes.
const HIDDEN_WAIT_MS = 120_000;

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs in the page before its scripts. Counts timers set while hidden (window.__fewstepTimers).
function emulateBackgroundTab() {
  const CLAMP_MS = 60_000;
  let hidden = false;
  const parked = [];
  const realTimeout = window.setTimeout.bind(window);
  const realInterval = window.setInterval.bind(window);
  const realFrame = window.requestAnimationFrame.bind(window);
  window.__fewstepTimers = 0;
  window.__fewstepTimerStacks = [];
  const count = () => {
    if (!hidden) return;
    window.__fewstepTimers++;
    if (window.__fewstepTimerStacks.length < 3) window.__fewstepTimerStacks.push(new Error().stack);
  };
  window.setTimeout = (f, ms, ...a) => {
    count();
    return realTimeout(f, hidden ? Math.max(ms ?? 0, CLAMP_MS) : ms, ...a);
  };
  window.setInterval = (f, ms, ...a) => {
    count();
    return realInterval(f, hidden ? Math.max(ms ?? 0, CLAMP_MS) : ms, ...a);
  };
  window.requestAnimationFrame = (f) => (hidden ? (parked.push(f), 0) : realFrame(f));
  Object.defineProperty(Document.prototype, 'visibilityState',
    { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => hidden });
  window.__fewstepHide = (on) => {
    hidden = on;
    document.dispatchEvent(new Event('visibilitychange'));
    if (!on) parked.splice(0).forEach((f) => realFrame(f));
  };
}

const { server, port } = await startServer(served);
const dir = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1100, height: 760 },
  args: ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
    '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.addInitScript(emulateBackgroundTab);
  const updates = WARMUP + 2 * MEASURED + 1;
  await page.goto(`http://127.0.0.1:${port}/index.html?train=tiny&updates=${updates}&batch=2&seed=3`);
  const state = () => page.evaluate(() => ({ err: window.fewstepError ?? null, run: window.fewstepDistilled?.() ?? null }));
  // Polled from here (node's timers), not with the page's, which the hidden phase clamps.
  async function waitFor(pred, ms) {
    const end = Date.now() + ms;
    for (;;) {
      const s = await state();
      if (s.err || pred(s.run) || Date.now() > end) return s;
      await sleep(250);
    }
  }
  // The updates done per second from `from` until `count` more are done (or `ms` run out).
  async function rate(count, ms) {
    const a = await waitFor((r) => r, ms);
    const t0 = Date.now(), d0 = a.run?.done ?? 0;
    const b = await waitFor((r) => r?.done >= d0 + count || r?.ended, ms);
    const secs = (Date.now() - t0) / 1000, made = (b.run?.done ?? 0) - d0;
    return { perSec: made / secs, made, secs, err: b.err };
  }
  await waitFor((r) => r?.done >= WARMUP, 600_000);
  const framesBefore = await page.evaluate(() => { window.__frames = 0; const tick = () => { window.__frames++; requestAnimationFrame(tick); }; requestAnimationFrame(tick); return 0; });
  const visible = await rate(MEASURED, 300_000);
  const frames = await page.evaluate(() => window.__frames) - framesBefore;
  await page.evaluate(() => window.__fewstepHide(true));
  const hidden = await rate(MEASURED, HIDDEN_WAIT_MS);
  const timers = await page.evaluate(() => window.__fewstepTimers);
  const stacks = await page.evaluate(() => window.__fewstepTimerStacks);
  await page.evaluate(() => window.__fewstepHide(false));
  const fmt = (r) => `${r.made} updates in ${r.secs.toFixed(1)} s (${r.perSec.toFixed(3)}/s)`;
  check(!visible.err && visible.made >= MEASURED, `visible: ${fmt(visible)}`);
  check(frames >= 2, `the page drew frames while it trained visibly: ${frames} in ${visible.secs.toFixed(1)} s`);
  check(!hidden.err && hidden.perSec >= 0.5 * visible.perSec,
    `hidden (no frames, timers clamped to a minute): ${fmt(hidden)}, ` +
    `${(100 * hidden.perSec / visible.perSec).toFixed(0)}% of the visible rate (needed: 50%)`);
  // A timer in the loop would be set once per update; others (the app's own, e.g. a repaint
  // asked for later) may be set once.
  check(timers < hidden.made, `timers set while hidden: ${timers} in ${hidden.made} updates (none sits in the update loop)`);
  for (const s of stacks) console.log(`  a timer set while hidden, from: ${s.split('\n').slice(2, 5).map((l) => l.trim()).join(' < ')}`);
  const end = await waitFor((r) => r?.ended, 600_000);
  check(!end.err && end.run?.ended && !end.run.failed && end.run.done === updates,
    `the run finished once visible again: "${end.err ?? end.run?.ended}", ${end.run?.done} of ${updates} updates, ` +
    `${end.run?.losses.length} losses read back`);

  // A device lost mid-run (the test hook destroys it): the page says so, starts again on a new
  // device when asked, keeps the teacher made above, and the lost run restarts and finishes.
  const rectOf = async (name) => (await page.evaluate(() => window.fewstepStatus?.()))?.rects?.[name];
  const clickRect = async (r) => r && page.mouse.click(r.x + r.w / 2, r.y + r.h / 2);
  await clickRect(await rectOf('startRun'));
  const second = await waitFor((r) => r?.done >= 1 && !r.ended, 600_000);
  const destroyed = await page.evaluate(() => window.fewstepTestLoseDevice());
  let lost = null;
  for (const end = Date.now() + 60_000; Date.now() < end && !lost; await sleep(500)) {
    lost = await page.evaluate(() => window.fewstepError ?? null);
  }
  const offered = await page.evaluate(() => !!document.getElementById('recover'));
  check(destroyed && second.run?.done >= 1 && /lost/i.test(lost ?? '') && offered,
    `a device destroyed at update ${second.run?.done} of the second run ends in the recovery message: "${lost}"` +
    `${offered ? ' with a "Start again on a new device" button' : ''}`);
  await page.click('#recover').catch(() => {});
  let back = null;
  for (const end = Date.now() + 600_000; Date.now() < end; await sleep(1000)) {
    back = await page.evaluate(() => ({ err: window.fewstepError ?? null, s: window.fewstepStatus?.() ?? null }));
    if (back.err || (back.s?.rects?.restartLost && back.s.loadingDone >= back.s.loadingExpected && back.s.models.length >= 5)) break;
  }
  check(!back?.err && back?.s?.models.includes('web-tiny-teacher') && back.s.rects.restartLost,
    `on a new device: ${back?.s?.models.length} models (${back?.s?.models.join(', ')}), the lost run offered again` +
    `${back?.err ? `; error: ${back.err}` : ''}`);
  await clickRect(back?.s?.rects?.restartLost);
  const again = await waitFor((r) => r?.ended && r.done > 0, 900_000);
  check(!again.err && again.run?.ended && !again.run.failed && again.run.done === updates,
    `the restarted run finished: "${again.err ?? again.run?.ended}", ${again.run?.done} of ${updates} updates`);
} finally {
  await browser.close();
  fs.rmSync(dir, { recursive: true, force: true });
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
