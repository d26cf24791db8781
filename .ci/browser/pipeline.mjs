// Issue 32 in headless Chromium (WebGPU on SwiftShader): a diffusers pipeline's files dropped on
// the page become a model. A browser hands a page the files of a drop, never their folders, so
// the page keeps each of unet/config.json, unet/diffusion_pytorch_model.safetensors and
// scheduler/scheduler_config.json until all three have arrived: dropped in two goes here, the
// first go gets a message naming what is still missing and adds no model, the second adds the
// model (its arguments: the fixture folder, relative to the repository).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const fixture = path.resolve(root, process.argv[2] ?? 'tests/fixtures/diffusers/resnet-scale-shift');
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
const file = (rel) => [path.basename(rel), fs.readFileSync(path.join(fixture, rel)).toString('base64')];
// Drops files (name, base64) on the canvas as a person's drop would arrive.
const drop = (page, files) => page.evaluate((files) => {
  const dt = new DataTransfer();
  for (const [name, b64] of files) {
    dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name));
  }
  const canvas = document.getElementById('app');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    canvas.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
  }
}, files);
const settled = (page, test) => page.waitForFunction(test, null, { timeout: 120_000, polling: 200 })
  .catch(() => {}).then(() => page.evaluate(() => window.fewstepStatus()));
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(`http://127.0.0.1:${port}/index.html`);
  const before = await settled(page, () => {
    const s = window.fewstepStatus && window.fewstepStatus();
    return s && s.loadingExpected > 0 && s.loadingDone === s.loadingExpected;
  });
  check(before && before.models.length > 0, `the page loaded its models: ${JSON.stringify(before?.models)}`);
  await drop(page, [file('scheduler/scheduler_config.json'), file('model_index.json')]);
  const half = await settled(page, () => {
    const s = window.fewstepStatus();
    return s.loadingDone === s.loadingExpected && /too/.test(s.status);
  });
  check(half && /drop unet\/config.json and unet\/diffusion_pytorch_model.safetensors too/.test(half.status)
    && half.models.length === before.models.length && half.loadingDone === half.loadingExpected,
    `the scheduler config and the index alone add no model and say what is missing: "${half?.status}" ` +
    `(${half?.models.length} models, ${half?.loadingDone} of ${half?.loadingExpected} files handled)`);
  await drop(page, [file('unet/config.json'), file('unet/diffusion_pytorch_model.safetensors')]);
  const whole = await settled(page, () => {
    const s = window.fewstepStatus();
    return s.loadingDone === s.loadingExpected && /diffusers/.test(s.models.join());
  });
  const added = whole ? whole.models.filter((m) => !before.models.includes(m)) : [];
  check(whole && added.length === 1 && /diffusers/.test(added[0]) && whole.status === `opened ${added[0]}`,
    `the rest of the pipeline's files add it as one model: ${JSON.stringify(added)} ` +
    `(status "${whole?.status}", ${whole?.loadingDone} of ${whole?.loadingExpected} files handled)`);
} finally {
  await browser.close();
  fs.rmSync(dir, { recursive: true, force: true });
  server.close();
}
console.log(failed ? `${failed} check(s) failed` : 'all pipeline-drop checks passed');
process.exit(failed ? 1 : 0);
