// Classes and guidance in the web Train tab (issue 35) in headless Chromium (WebGPU on
// SwiftShader), against the native command line on the same data (assets/fmnist-10k):
//  a. ?train=tiny&updates=2&batch=2&seed=3&classes=1&uncond=0.2 trains a class-conditional tiny
//     teacher in the tab: its model file has the 10 classes and equals native
//     `fewstep train --classes --uncond-prob 0.2` (the first argument) within TRAIN_TOL_*;
//  b. ?model=cond.safetensors&distill=cond.safetensors&from=4&to=2&updates=2&batch=2&lr=0.0001
//     &seed=3&guided=1&wrange=0,4&stage1=2 distills a class-conditional teacher hosted beside the
//     page with guidance: the stage-1 student (w as an input) and the 2-step student equal native
//     `fewstep distill --guided --guidance-range 0,4 --guidance-updates 2`'s
//     guided-teacher.safetensors and steps-2.safetensors (the second argument: its folder)
//     within GUIDED_TOL_*.
// Usage: node .ci/browser/classes.mjs NATIVE_TRAIN_MODEL NATIVE_GUIDED_DIR
//        (FEWSTEP_SITE=DIR serves a built site holding cond.safetensors, the teacher of b)
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

// As distill.mjs: the same WGSL rounds differently on lavapipe and SwiftShader, and a rounding
// difference matters where a gradient's sign flips; there a weight moves the other way, by at
// most the Adam step (~1.01 lr for the first updates; 3.2 lr allowed, as distill.mjs does).
// a: tiny's lr 4e-4 with a 200-update warm-up gives 2e-6 and 4e-6 for the two updates.
const TRAIN_STEP_BOUND = 3.2 * (2e-6 + 4e-6);
const TRAIN_TOL_MAX = 2 * TRAIN_STEP_BOUND;
const TRAIN_TOL_MEAN = 0.01 * TRAIN_STEP_BOUND;
// b: lr 1e-4 annealed over 2 updates (1e-4, 5e-5) in each stage; the 2-step student starts
// from the stage-1 student, so its bound adds both stages'.
const STAGE_BOUND = 3.2 * (1e-4 + 5e-5);
const GUIDED_TOL_MAX = { 'guided-teacher.safetensors': 2 * STAGE_BOUND, 'steps-2.safetensors': 4 * STAGE_BOUND };
const GUIDED_TOL_MEAN_FRACTION = 0.01;

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
const [nativeTrain, nativeGuided] = process.argv.slice(2);

function readSafetensors(buf) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const tensors = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = t.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    const vals = new Float64Array((b - a) / 4);
    for (let i = 0; i < vals.length; i++) vals[i] = bytes.readFloatLE(4 * i);
    tensors.set(name, vals);
  }
  return { tensors, metadata: header.__metadata__ ?? {} };
}
// max and mean |got - want| over every weight; the mean distance `want` is from `from` over the
// tensors `from` has; the names missing or misshapen in `got`.
function compare(got, want, from) {
  let max = 0, sum = 0, count = 0, moved = 0, movedCount = 0;
  const missing = [];
  for (const [name, w] of want.tensors) {
    const g = got.tensors.get(name);
    if (!g || g.length !== w.length) { missing.push(name); continue; }
    const f = from?.tensors.get(name);
    for (let i = 0; i < w.length; i++) {
      const d = Math.abs(g[i] - w[i]);
      max = Math.max(max, d); sum += d; count++;
      if (f && f.length === w.length) { moved += Math.abs(w[i] - f[i]); movedCount++; }
    }
  }
  if (got.tensors.size !== want.tensors.size) missing.push(`(${got.tensors.size} tensors, want ${want.tensors.size})`);
  return { max, mean: sum / count, count, meanMoved: movedCount ? moved / movedCount : 0, missing };
}

let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };

const { server, port } = await startServer(served);
const origin = `http://127.0.0.1:${port}`;
const profile = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
  viewport: { width: 1100, height: 760 },
  args: ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
    '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
});
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[page] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  const runTo = async (query) => {
    await page.goto(`${origin}/index.html?${query}`);
    await page.waitForFunction(() => window.fewstepError || window.fewstepDistilled?.()?.ended,
      null, { timeout: 900_000, polling: 1000 });
    return { error: await page.evaluate(() => window.fewstepError), run: await page.evaluate(() => window.fewstepDistilled()) };
  };

  // a. A class-conditional teacher.
  const a = await runTo('train=tiny&updates=2&batch=2&seed=3&classes=1&uncond=0.2');
  const madeA = a.run?.students?.[0];
  if (a.error || a.run?.failed || !madeA) {
    check(false, `the tab could not train a class-conditional teacher: ${a.error ?? a.run?.ended}`);
  } else {
    const got = readSafetensors(Buffer.from(madeA.file, 'base64'));
    const want = readSafetensors(fs.readFileSync(nativeTrain));
    const meta = JSON.parse(got.metadata.fewstep ?? '{}');
    const c = compare(got, want);
    check(meta.arch?.classes === 10 && c.missing.length === 0 && c.max <= TRAIN_TOL_MAX && c.mean <= TRAIN_TOL_MEAN,
      `the tab's class-conditional teacher (${meta.arch?.classes} classes: ${(meta.arch?.class_names ?? []).slice(0, 3).join(', ')}, …) ` +
      `equals native fewstep train --classes --uncond-prob 0.2: ${c.count} weights, max |diff| ${c.max.toExponential(2)} ` +
      `(tol ${TRAIN_TOL_MAX.toExponential(2)}), mean ${c.mean.toExponential(2)} (tol ${TRAIN_TOL_MEAN.toExponential(2)})` +
      (c.missing.length ? `; missing: ${c.missing.slice(0, 5).join(', ')}` : ''));
  }

  // b. A guided distillation of a class-conditional teacher hosted beside the page.
  const b = await runTo('model=cond.safetensors&distill=cond.safetensors&from=4&to=2&updates=2&batch=2' +
    '&lr=0.0001&seed=3&guided=1&wrange=0,4&stage1=2');
  const students = b.run?.students ?? [];
  check(!b.error && !b.run?.failed && students.map((s) => s.steps).join(',') === '0,2'
    && students[0].name === 'cond.safetensors-guided',
    `the tab distilled with guidance: "${b.error ?? b.run?.ended}", students ` +
    `${students.map((s) => `${s.name} (${s.steps} steps)`).join(', ')}; ${b.run?.done} of ${b.run?.total} updates`);
  const teacher = readSafetensors(fs.readFileSync(path.join(served, 'cond.safetensors')));
  for (const [student, file] of [[students[0], 'guided-teacher.safetensors'], [students[1], 'steps-2.safetensors']]) {
    if (!student) continue;
    const got = readSafetensors(Buffer.from(student.file, 'base64'));
    const want = readSafetensors(fs.readFileSync(path.join(nativeGuided, file)));
    const c = compare(got, want, teacher);
    const meta = JSON.parse(got.metadata.fewstep ?? '{}');
    check(c.missing.length === 0 && c.meanMoved > 0 && c.max <= GUIDED_TOL_MAX[file]
      && c.mean <= GUIDED_TOL_MEAN_FRACTION * c.meanMoved && meta.arch?.guidance?.w_max === 4,
      `${student.name} equals native fewstep distill --guided's ${file}: ${c.count} weights, max |diff| ` +
      `${c.max.toExponential(2)} (tol ${GUIDED_TOL_MAX[file].toExponential(2)}), mean ${c.mean.toExponential(2)} vs ` +
      `mean distance moved ${c.meanMoved.toExponential(2)} (tol ${GUIDED_TOL_MEAN_FRACTION * 100}% of it); ` +
      `w range ${JSON.stringify(meta.arch?.guidance)}` + (c.missing.length ? `; missing: ${c.missing.slice(0, 5).join(', ')}` : ''));
  }
  await page.screenshot({ path: path.join(root, 'target/web-guided-distill.png') }).catch(() => {});
} catch (e) {
  check(false, String(e.message).split('\n').slice(0, 3).join(' | '));
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
