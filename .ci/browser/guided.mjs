// Issue 24 in headless Chromium (WebGPU on SwiftShader): a class-conditional model hosted beside
// the page (index.html?model=FILE.safetensors, fetched after the bundled ones) sampled for one
// class with classifier-free guidance (class=…&guidance=…) equals native
// `fewstep sample --class … --guidance … --values` (the JSON given as the first argument; the
// model file, relative to the served folder, is the second).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

// As app.mjs: the same WGSL on lavapipe and SwiftShader agrees to float rounding, amplified by the
// steps; guidance (1 + w) x_c - w x_u amplifies a difference by up to 1 + 2w.
const TOL_MAX = 5e-3;
const TOL_MEAN = 5e-4;
const native = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const model = process.argv[3];
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
const { server, port } = await startServer(served);
const args = ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
const dir = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
  viewport: { width: 1100, height: 760 }, args,
});
let failed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); if (!ok) failed++; };
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  const cls = native.class_name;
  const q = `model=${encodeURIComponent(model)}&steps=${native.steps}&seed=${native.seed}` +
    `&count=${native.count}&class=${encodeURIComponent(cls)}&guidance=${native.guidance}`;
  await page.goto(`http://127.0.0.1:${port}/index.html?${q}`);
  await page.waitForFunction(() => window.fewstepError || (window.fewstepResult && window.fewstepResult()),
    null, { timeout: 900_000, polling: 500 });
  const err = await page.evaluate(() => window.fewstepError);
  if (err) {
    check(false, `the page could not sample: ${err}`);
  } else {
    const r = await page.evaluate(() => window.fewstepResult());
    const want = native.values;
    let worst = 0, sum = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(r.values[i] - want[i]);
      worst = Math.max(worst, d); sum += d;
    }
    const mean = sum / want.length;
    check(r.values.length === want.length && r.model === model && worst <= TOL_MAX && mean <= TOL_MEAN,
      `the page (${q}) equals native fewstep sample --class '${cls}' --guidance ${native.guidance}: ` +
      `${r.values.length} values of ${r.model}, max |diff| ${worst.toExponential(2)} (tol ${TOL_MAX}), ` +
      `mean ${mean.toExponential(2)} (tol ${TOL_MEAN})`);
    const label = await page.evaluate(() => window.fewstepStatus?.() ?? null);
    console.log(`page status: ${JSON.stringify(label)}`);
  }
} finally {
  await browser.close();
  fs.rmSync(dir, { recursive: true, force: true });
  server.close();
}
console.log(failed ? `${failed} check(s) failed` : 'all guided checks passed');
process.exit(failed ? 1 : 0);
