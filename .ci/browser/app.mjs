// The web app in headless Chromium (WebGPU on SwiftShader): serves the repository root on
// 127.0.0.1, opens index.html?model=…&steps=4&seed=…&count=… and fails unless the samples the
// page finishes equal, to APP_TOL, what native `fewstep sample --values` wrote for the same model,
// steps and seed (the JSON file given as the first argument). Then opens the page in a Chromium
// without WebGPU and fails unless it explains what is missing.
// Optional second argument: a PNG path for a screenshot (needs a windowed Chromium: DISPLAY set).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

// Values are in [-1, 1]; one 8-bit grey level is 2/255 = 7.8e-3. The two sides run the same
// WGSL on different drivers (lavapipe vs SwiftShader: different FMA contraction, exp/sin, and
// subgroup sizes 8 vs 4 change summation order), so they agree to float rounding, amplified a
// little by 4 steps of a U-Net, not bit for bit (measured: max 1.0e-6, mean 1.1e-7).
const APP_TOL_MAX = 1e-3;
const APP_TOL_MEAN = 1e-4;
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const native = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const screenshot = process.argv[3];
const { server, port } = await startServer(root);

const common = ['--no-sandbox', '--disable-gpu-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];
const webgpu = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--disable-vulkan-surface', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
const windowed = Boolean(process.env.DISPLAY) && Boolean(screenshot);

async function withBrowser(args, headless, fn) {
  const dir = fs.mkdtempSync('/tmp/fewstep-chromium-');
  const browser = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless,
    viewport: { width: 1100, height: 760 },
    args: [...(headless ? ['--headless=new'] : ['--ozone-platform=x11']), ...common, ...args],
  });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[page] ${m.text()}`); });
    page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
    return await fn(page);
  } finally {
    await browser.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };
try {
  const q = `model=${native.model}&steps=${native.steps}&seed=${native.seed}&count=${native.count}`;
  await withBrowser(webgpu, !windowed, async (page) => {
    const t0 = Date.now();
    await page.goto(`http://127.0.0.1:${port}/index.html?${q}`);
    await page.waitForFunction(() => window.fewstepError || (window.fewstepResult && window.fewstepResult()),
      null, { timeout: 900_000, polling: 500 });
    const err = await page.evaluate(() => window.fewstepError);
    if (err) { check(false, `the page could not sample: ${err}`); return; }
    const r = await page.evaluate(() => window.fewstepResult());
    const secs = (Date.now() - t0) / 1000;
    const want = native.values;
    let worst = 0, sum = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(r.values[i] - want[i]);
      worst = Math.max(worst, d); sum += d;
    }
    const mean = sum / want.length;
    const same = r.values.length === want.length && r.model === native.model && r.steps === native.steps
      && worst <= APP_TOL_MAX && mean <= APP_TOL_MEAN;
    check(same, `web app (${q}) equals native fewstep sample: ${r.values.length} values, ` +
      `max |diff| ${worst.toExponential(2)} (tol ${APP_TOL_MAX}), mean ${mean.toExponential(2)} (tol ${APP_TOL_MEAN}); ` +
      `${native.steps} steps took ${r.ms.toFixed(0)} ms in the page (${secs.toFixed(1)} s from opening it)`);
    if (screenshot) {
      await page.waitForTimeout(1500);
      await page.screenshot({ path: screenshot });
      console.log(`screenshot -> ${screenshot}${windowed ? '' : ' (headless: the canvas may be blank)'}`);
    }
  });
  // Without --enable-unsafe-webgpu Chromium on Linux offers no WebGPU adapter.
  await withBrowser(['--disable-features=WebGPU,Vulkan'], true, async (page) => {
    await page.goto(`http://127.0.0.1:${port}/index.html?${q}`);
    await page.waitForFunction(() => window.fewstepError, null, { timeout: 60_000 });
    const text = await page.evaluate(() => window.fewstepError);
    const visible = await page.isVisible('#message');
    check(visible && /WebGPU/.test(text) && /Chrome/.test(text),
      `a browser without WebGPU gets an explanation: "${text.trim().slice(0, 80)}…"`);
  });
} catch (e) {
  check(false, String(e.message).split('\n').slice(0, 3).join(' | '));
} finally {
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
