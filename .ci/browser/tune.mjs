// Kernel tuning in the browser tab (tensor/tuner, deferred: between steps) in headless Chromium
// (WebGPU on SwiftShader, a software adapter, which tunes only when the address asks), on one
// browser profile:
//  a. ?tune=on&tune_clock=SEED (made-up times, so no candidate is compiled for timing): a sample
//     run's first step takes the fixed rule, the pass after it plans every GEMM bucket the run
//     met; the status says so (tuning.on, tuned > 0, plan > 0, the status line "tuned N GEMM
//     kernels ... kept in this browser's local storage"), and local storage holds one line per
//     planned bucket; the picture agrees with the untuned one (f32 sums in another order);
//  b. a reload: the plan comes from local storage, nothing is tuned again (tuned 0), and the
//     picture is a second visit's to the bit (every step on the plan);
//  c. ?tune=off: no tuning, and the picture agrees.
// Measured times are not used here: on SwiftShader one bucket's candidates took 127 s to build
// and time, and Chromium then lost the device (a software adapter tunes only when asked).
// Usage: node .ci/browser/tune.mjs   (FEWSTEP_SITE=DIR serves a built site)
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };

const { server, port } = await startServer(served);
const profile = fs.mkdtempSync('/tmp/fewstep-chromium-');
const args = ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
  viewport: { width: 1100, height: 760 }, args,
});
const SAMPLE = 'model=fmnist-4step&steps=4&seed=3&count=4&run=1';

// One visit: the finished run's result and the page's status.
async function visit(query) {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[page] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${port}/index.html?${query}`);
  await page.waitForFunction(() => window.fewstepError || (window.fewstepResult && window.fewstepResult()),
    null, { timeout: 900_000, polling: 500 });
  // The status line is drawn a frame after the pass.
  await new Promise((ok) => setTimeout(ok, 1500));
  const out = await page.evaluate(() => ({
    err: window.fewstepError ?? null,
    result: window.fewstepResult(),
    status: window.fewstepStatus(),
    stored: localStorage.getItem('fewstep-kernel-plan'),
  }));
  out.seconds = (Date.now() - t0) / 1000;
  await page.close();
  if (out.err) throw new Error(`the page failed: ${out.err}`);
  return out;
}
const worst = (a, b) => a.result.values.reduce((w, v, i) => Math.max(w, Math.abs(v - b.result.values[i])), 0);
const lines = (text) => (text ?? '').split('\n').filter((l) => l.length > 0);

try {
  // The untuned picture first (a software adapter does not tune by default).
  const plain = await visit(SAMPLE);
  check(plain.status.tuning && plain.status.tuning.on === false && plain.status.tuning.tuned === 0,
    `a software adapter keeps the fixed rule unless asked: ${JSON.stringify(plain.status.tuning)}`);

  // a.
  const a = await visit(`${SAMPLE}&tune=on&tune_clock=5`);
  const t = a.status.tuning;
  check(t.on && t.tuned > 0 && t.plan >= t.tuned,
    `a. tune=on: the pass between steps planned ${t.tuned} GEMM buckets (plan ${t.plan})`);
  check(/^tuned \d+ GEMM kernels? for this GPU in [\d.]+ s between steps, kept in this browser's local storage/.test(a.status.status),
    `a. the status line says so: "${a.status.status}"`);
  const stored = lines(a.stored);
  check(stored.length === t.plan && stored.every((l) => l.split('\t').length === 3),
    `a. local storage holds one line per planned bucket (${stored.length}), e.g. ${JSON.stringify(stored[0]?.split('\t').slice(1))}`);
  const da = worst(a, plain);
  check(a.result.values.length === plain.result.values.length && da < 2e-3,
    `a. the tuned run's picture agrees with the untuned one (largest difference ${da.toExponential(2)} < 2e-3)`);

  // b.
  const b1 = await visit(`${SAMPLE}&tune=on&tune_clock=5`);
  const b2 = await visit(`${SAMPLE}&tune=on&tune_clock=5`);
  check(b1.status.tuning.tuned === 0 && b1.status.tuning.plan === t.plan,
    `b. a reload takes the plan from local storage and tunes nothing: ${JSON.stringify(b1.status.tuning)}`);
  const same = b1.result.values.length === b2.result.values.length
    && b1.result.values.every((v, i) => v === b2.result.values[i]);
  check(same, 'b. two visits on the kept plan make the same picture to the bit');
  const db = worst(b1, plain);
  check(db < 2e-3, `b. and it agrees with the untuned one (largest difference ${db.toExponential(2)})`);

  // c.
  const c = await visit(`${SAMPLE}&tune=off`);
  check(c.status.tuning.on === false && c.status.tuning.tuned === 0 && worst(c, plain) === 0,
    `c. tune=off keeps the fixed rule: the untuned picture to the bit (${JSON.stringify(c.status.tuning)})`);

} catch (e) {
  check(false, `${e.message}`);
} finally {
  await browser.close();
  server.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
