// An in-tab distillation that survives a closed browser (src/app/web_distill/checkpoint.rs) in
// headless Chromium (WebGPU on SwiftShader), on one browser profile:
//  a. ?distill=fmnist-4step&to=2&updates=4&batch=2&lr=0.0001&seed=3&checkpoint=1 starts a run
//     that checkpoints after every update; once a checkpoint at update 2 or later is kept (and the
//     run has not ended), the whole browser is closed, not just the page;
//  b. a new browser on the profile opens the same link again (as a restored session would): the
//     link's run does not start afresh over the checkpoint; the Train tab offers the run, and its
//     "Resume it" (clicked on the canvas) continues from the checkpoint to the end; the student
//     joins the model list, and the run's checkpoint entries are gone from storage;
//  c. the resumed student's file equals, byte for byte, the one an uninterrupted run in the same
//     browser makes, and the weights equal native `fewstep distill`'s (the first argument: its
//     steps-2.safetensors with --updates 4 --final-updates 4 and the same settings) within
//     WEIGHT_TOL_*.
// Prints what the checkpoints cost (for the note).
// Usage: node .ci/browser/resume.mjs NATIVE_STEPS2_FILE   (FEWSTEP_SITE=DIR serves a built site)
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

// Both sides run the same WGSL; lavapipe and SwiftShader round differently (see distill.mjs).
// A rounding difference matters where a gradient is near zero and its sign flips; there the
// weight moves the other way. With Adam (b1 0.9, b2 0.999) a weight moves by at most ~1.01 lr in
// each of the first 4 updates (Cauchy-Schwarz on the bias-corrected moments); lr 1e-4 annealed
// over 4 updates is 1e-4, 7.5e-5, 5e-5, 2.5e-5. As distill.mjs, 3.2 lr per update is allowed, on
// either side (twice), and flips must be rare: the mean difference below 1% of the mean distance
// the native run moved the weights.
const LRS = [1e-4, 7.5e-5, 5e-5, 2.5e-5];
const WEIGHT_TOL_MAX = 2 * 3.2 * LRS.reduce((a, b) => a + b, 0);
const WEIGHT_TOL_MEAN_FRACTION = 0.01;
const RUN = 'distill=fmnist-4step&to=2&updates=4&batch=2&lr=0.0001&seed=3';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
const nativeFile = process.argv[2];

function readSafetensors(buf) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = t.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    const vals = new Float64Array((b - a) / 4);
    for (let i = 0; i < vals.length; i++) vals[i] = bytes.readFloatLE(4 * i);
    out.set(name, vals);
  }
  return out;
}

let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };

const { server, port } = await startServer(served);
const origin = `http://127.0.0.1:${port}`;
const profile = fs.mkdtempSync('/tmp/fewstep-chromium-');
const args = ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
const launch = () => chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
  viewport: { width: 1100, height: 760 }, args,
});
const watch = (page) => {
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[page] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
};
const status = (page) => page.evaluate(() => window.fewstepStatus?.() ?? null);
const run = (page) => page.evaluate(() => window.fewstepDistilled?.() ?? null);
const ended = (page) => page.waitForFunction(() => window.fewstepError || window.fewstepDistilled?.()?.ended,
  null, { timeout: 900_000, polling: 1000 });

let browser = await launch();
try {
  // a. Start, and close the browser once a checkpoint past update 1 is kept.
  let page = await browser.newPage();
  watch(page);
  await page.goto(`${origin}/index.html?${RUN}&checkpoint=1`);
  const t0 = Date.now();
  await page.waitForFunction(() => window.fewstepError || window.fewstepDistilled?.()?.ended
    || window.fewstepDistilled?.()?.checkpoints?.update >= 2, null, { timeout: 900_000, polling: 200 });
  const before = await run(page);
  const runs = await page.evaluate(() => window.fewstepStore.names('runs'));
  check(!before?.ended && before?.checkpoints?.update >= 2 && runs.includes('run')
    && runs.some((n) => n.startsWith('teacher-')),
    `the run checkpointed at update ${before?.checkpoints?.update} of ${before?.total} ` +
    `(${before?.checkpoints?.count} checkpoints, ${before?.checkpoints?.seconds?.toFixed(2)} s in all, ` +
    `${((before?.checkpoints?.bytes ?? 0) / 1e6).toFixed(2)} MB each, teacher ` +
    `${((before?.checkpoints?.teacher_bytes ?? 0) / 1e6).toFixed(2)} MB; the run: ` +
    `${((before?.seconds ?? 0) / (before?.done || 1)).toFixed(1)} s per update); storage: ${runs.join(', ')}; ` +
    `closing the browser ${((Date.now() - t0) / 1000).toFixed(1)} s after opening the page`);
  await browser.close();

  // b. A new browser on the profile: the Train tab offers the run; resume it.
  browser = await launch();
  page = await browser.newPage();
  watch(page);
  await page.goto(`${origin}/index.html?${RUN}&checkpoint=1`);
  await page.waitForFunction(() => window.fewstepError || window.fewstepStatus?.()?.rects?.resumeRun,
    null, { timeout: 600_000, polling: 500 });
  await page.screenshot({ path: path.join(root, 'target/web-resume-offer.png') }).catch(() => {});
  const offered = await page.evaluate(() => ({ run: window.fewstepDistilled(), status: window.fewstepStatus()?.status }));
  check(offered.run === null && /interrupted before/.test(offered.status ?? ''),
    `the link again: no run started over the checkpoint (${JSON.stringify(offered.run)}); the page says ` +
    `"${offered.status}"`);
  const r = (await status(page))?.rects?.resumeRun;
  if (r) await page.mouse.click(r.x + r.w / 2, r.y + r.h / 2);
  await ended(page);
  const resumed = await run(page);
  const err = await page.evaluate(() => window.fewstepError);
  await page.waitForFunction(() => window.fewstepStatus()?.models.includes('fmnist-4step-to-2step'),
    null, { timeout: 60_000, polling: 500 }).catch(() => {});
  const models = (await status(page))?.models ?? [];
  const left = await page.evaluate(() => window.fewstepStore.names('runs'));
  check(!!r && !err && !resumed?.failed && resumed?.resumedFrom >= 2 && resumed?.students?.length === 1
    && resumed.students[0].steps === 2 && models.includes('fmnist-4step-to-2step') && left.length === 0,
    `"Resume it" continued from update ${resumed?.resumedFrom} to ${resumed?.done} of ${resumed?.total}: ` +
    `"${err ?? resumed?.ended}"; models ${models.join(', ')}; checkpoint entries left: ${left.length}`);

  // c. An uninterrupted run in the same browser, and native fewstep distill.
  await page.goto(`${origin}/index.html?${RUN}&checkpoint=0`);
  await ended(page);
  const whole = await run(page);
  const same = resumed?.students?.[0]?.file && resumed.students[0].file === whole?.students?.[0]?.file;
  check(!whole?.failed && same,
    `the resumed student's file equals an uninterrupted run's byte for byte ` +
    `(${Buffer.from(whole?.students?.[0]?.file ?? '', 'base64').length} bytes; uninterrupted: "${whole?.ended}")`);
  if (resumed?.students?.length) {
    const native = readSafetensors(fs.readFileSync(nativeFile));
    const teacher = readSafetensors(Buffer.from(whole?.students?.[0]?.file ?? resumed.students[0].file, 'base64'));
    const web = readSafetensors(Buffer.from(resumed.students[0].file, 'base64'));
    let max = 0, sum = 0, count = 0;
    const missing = [];
    for (const [name, want] of native) {
      const got = web.get(name);
      if (!got || got.length !== want.length) { missing.push(name); continue; }
      for (let i = 0; i < want.length; i++) { const d = Math.abs(got[i] - want[i]); max = Math.max(max, d); sum += d; count++; }
    }
    // How far native moved the weights from the bundled 4-step student (its teacher).
    const bundled = fs.readFileSync(path.join(root, 'assets/fmnist-steps-4.f16.safetensors'));
    const f16 = (h) => { const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
      return e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15); };
    const n = Number(bundled.readBigUInt64LE(0));
    const header = JSON.parse(bundled.subarray(8, 8 + n).toString('utf8'));
    let moved = 0, movedCount = 0;
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__' || !native.has(name)) continue;
      const [a] = t.data_offsets;
      const want = native.get(name);
      for (let i = 0; i < want.length; i++) { moved += Math.abs(want[i] - f16(bundled.readUInt16LE(8 + n + a + 2 * i))); movedCount++; }
    }
    const mean = sum / count, meanMoved = moved / movedCount;
    check(missing.length === 0 && web.size === native.size && teacher.size === native.size && meanMoved > 0
      && max <= WEIGHT_TOL_MAX && mean <= WEIGHT_TOL_MEAN_FRACTION * meanMoved,
      `the resumed student equals native fewstep distill's: ${count} weights, max |diff| ${max.toExponential(2)} ` +
      `(tol ${WEIGHT_TOL_MAX.toExponential(2)}), mean ${mean.toExponential(2)} vs mean distance moved ` +
      `${meanMoved.toExponential(2)} (tol ${WEIGHT_TOL_MEAN_FRACTION * 100}% of it)` +
      (missing.length ? `; missing: ${missing.slice(0, 5).join(', ')}` : ''));
  }
} catch (e) {
  check(false, String(e.message).split('\n').slice(0, 3).join(' | '));
} finally {
  await browser.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
