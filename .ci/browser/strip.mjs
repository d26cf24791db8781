// Issue 25's Sample-tab checks in headless Chromium (WebGPU on SwiftShader):
//  1. ?interpolate=A,B&count=K makes the strip native `fewstep sample --interpolate A,B --count K
//     --values` makes (the JSON given as the first argument), within app.mjs's tolerances; the
//     page's screenshot (the strip and the noise-schedule plot) goes to target/web-interpolate.png.
//  2. A 1024-step run of 64 images holds at most SCRUB_CAP_BYTES of textures for the step slider,
//     as the page itself measures them (fewstepLayout().scrubBytes), printed against what keeping
//     every step would take (the steps are blank: see below).
//  3. At 390 x 844 (a phone) nothing is laid out past the right edge on the Sample, Compare,
//     Models and Train tabs (fewstepStatus().usedRight, what egui laid out, against the width);
//     the Sample tab's picture goes to target/web-phone.png.
// Usage: node .ci/browser/strip.mjs NATIVE_STRIP_JSON   (FEWSTEP_SITE=DIR)
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

// As app.mjs: lavapipe and SwiftShader agree to float rounding, amplified over the steps.
const TOL_MAX = 5e-3;
const TOL_MEAN = 5e-4;
const SCRUB_STEPS = 1024, SCRUB_COUNT = 64;
const native = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
const { server, port } = await startServer(served);
const dir = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
  viewport: { width: 1100, height: 760 },
  args: ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
    '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
});
let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  const [a, b] = native.interpolate;
  const q = `model=${encodeURIComponent(native.model)}&steps=${native.steps}&interpolate=${a},${b}&count=${native.count}`;
  await page.goto(`http://127.0.0.1:${port}/index.html?${q}`);
  await page.waitForFunction(() => window.fewstepError || window.fewstepResult?.(), null, { timeout: 900_000, polling: 500 });
  const r = await page.evaluate(() => window.fewstepResult());
  const err = await page.evaluate(() => window.fewstepError);
  let worst = Infinity, mean = Infinity;
  if (r) {
    worst = 0; let sum = 0;
    for (let i = 0; i < native.values.length; i++) {
      const d = Math.abs(r.values[i] - native.values[i]); worst = Math.max(worst, d); sum += d;
    }
    mean = sum / native.values.length;
  }
  check(!err && r?.values.length === native.values.length && worst <= TOL_MAX && mean <= TOL_MEAN,
    `the page's strip (${q}) equals native fewstep sample --interpolate ${a},${b} --count ${native.count}: ` +
    `${r?.values.length} values, max |diff| ${worst.toExponential(2)} (tol ${TOL_MAX}), mean ${mean.toExponential(2)} ` +
    `(tol ${TOL_MEAN})${err ? `; error: ${err}` : ''}`);
  const layout = await page.evaluate(() => window.fewstepLayout());
  const grid = layout?.grids?.[0];
  check(grid && grid.w > 4 * grid.h, `the strip is drawn as one row: ${grid?.w}x${grid?.h} CSS px`);
  await page.screenshot({ path: path.join(root, 'target/web-interpolate.png') });

  // 3. A phone-sized window.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`http://127.0.0.1:${port}/index.html?model=fmnist-4step&steps=4&seed=1&count=4`);
  await page.waitForFunction(() => window.fewstepError || window.fewstepResult?.(), null, { timeout: 900_000, polling: 500 });
  await sleep(1000);
  await page.screenshot({ path: path.join(root, 'target/web-phone.png') });
  const clickTab = async (tab) => {
    const rect = (await page.evaluate(() => window.fewstepStatus()))?.rects?.[tab];
    if (rect) await page.mouse.click(rect.x + rect.w / 2, rect.y + rect.h / 2);
    await sleep(1500);
    return rect;
  };
  for (const tab of ['Sample', 'Compare', 'Models', 'Train / distill']) {
    const rect = await clickTab(tab);
    const s = await page.evaluate(() => window.fewstepStatus());
    const width = await page.evaluate(() => window.innerWidth);
    check(rect && s.usedRight <= width + 0.5,
      `at 390x844 the ${tab} tab lays nothing out past the right edge: used up to x = ${s.usedRight?.toFixed(1)} ` +
      `of ${width} px (egui's screen ${s.screenWidth?.toFixed(1)})`);
  }
  // 2. The scrubbing memory of a 1024-step run of 64 images. Sampling that on SwiftShader takes
  // hours (a tiny model's 16-image run made 54 steps in 900 s here), so the page's test hook
  // draws blank steps of the model's shape into textures the way a run draws its steps; the
  // memory is what the page's step slider holds, measured by the page.
  const t0 = Date.now();
  // On the phone-sized page of 3 (its Sample tab again): a smaller canvas draws faster.
  await clickTab('Sample');
  await page.evaluate(([s, c]) => window.fewstepTestScrub(s, c), [SCRUB_STEPS, SCRUB_COUNT]);
  let l = null, most = 0, polls = 0;
  for (const end = Date.now() + 600_000; Date.now() < end; await sleep(1000)) {
    l = await page.evaluate(() => window.fewstepLayout?.() ?? null);
    // scrubPeak: the page's own highest figure over the run, between two looks too.
    if (l?.steps === SCRUB_STEPS) { most = Math.max(most, l.scrubBytes, l.scrubPeak ?? 0); polls++; }
    if (l?.steps === SCRUB_STEPS && l.newestStep === SCRUB_STEPS) break;
    if (await page.evaluate(() => window.fewstepError)) break;
  }
  const [tw, th] = l?.textureSize ?? [0, 0];
  const every = 4 * tw * th * (2 * SCRUB_STEPS + 1);
  check(l?.newestStep === SCRUB_STEPS && most > 0 && most <= l.scrubCap && every > l.scrubCap && l.scrubStride > 1,
    `a ${SCRUB_STEPS}-step run of ${SCRUB_COUNT} images (${tw}x${th} texels a grid) held at most ` +
    `${(most / 1e6).toFixed(1)} MB of step textures over ${polls} looks (cap ${(l?.scrubCap / 1e6).toFixed(1)} MB; ` +
    `every step would take ${(every / 1e6).toFixed(1)} MB): ${l?.scrubFrames} steps kept, one in ${l?.scrubStride}; ` +
    `${((Date.now() - t0) / 1000).toFixed(0)} s`);

} finally {
  await browser.close();
  fs.rmSync(dir, { recursive: true, force: true });
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
