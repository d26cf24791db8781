// Windowed (non-headless) Chromium under Xvfb runs the web app's sample run to the end.
// Usage: DISPLAY=:99 node .ci/browser/windowed.mjs  (starts its own Xvfb when DISPLAY is unset)
// Env: WIN_MODE=windowed|headless, WIN_EXTRA="--flag --flag" (added), WIN_NOFIX=1 (omit the fix flags),
//      WIN_QUERY (default model=fmnist-4step&steps=4&seed=1&count=4), WIN_TIMEOUT seconds (default 400).
// Exits 0 and prints the time when window.fewstepResult() is non-null; 1 otherwise.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startServer } from './static-server.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const mode = process.env.WIN_MODE ?? 'windowed';
const query = process.env.WIN_QUERY ?? 'model=fmnist-4step&steps=4&seed=1&count=4';
const timeout = Number(process.env.WIN_TIMEOUT ?? 400) * 1000;

let xvfb = null;
if (mode === 'windowed' && !process.env.DISPLAY) {
  const disp = ':' + (90 + Math.floor(Math.random() * 9));
  xvfb = spawn('Xvfb', [disp, '-screen', '0', '1280x1024x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
  process.env.DISPLAY = disp;
  await new Promise((ok) => setTimeout(ok, 1000));
}

const common = ['--no-sandbox', '--disable-gpu-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];
const webgpu = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
// The fix. Windowed, Chromium's GPU watchdog is armed: when one task on the GPU process's main
// thread (SwiftShader running the sampler's WebGPU work on the CPU) runs past its timeout, it kills
// the GPU process ("GPU process exited unexpectedly: exit_code=512" on stderr), the page's WebGPU
// device is lost ("A valid external Instance reference no longer exists") and the run never ends.
// Headless (--headless=new) does not trip it. (--in-process-gpu loses the device at once: no use.)
const fix = ['--disable-gpu-watchdog'];
const extra = (process.env.WIN_EXTRA ?? '').split(/\s+/).filter(Boolean);
const args = [...(mode === 'headless' ? ['--headless=new'] : ['--ozone-platform=x11']), ...common, ...webgpu,
  ...(process.env.WIN_NOFIX ? [] : fix), ...extra];
console.log(`mode ${mode}, DISPLAY ${process.env.DISPLAY ?? '-'}, args ${args.join(' ')}`);

const { server, port } = await startServer(root);
const dir = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: mode === 'headless',
  viewport: { width: 1100, height: 760 },
  args,
});
let ok = false;
const t0 = Date.now();
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[page ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  page.on('crash', () => console.log('[page crashed]'));
  await page.goto(`http://127.0.0.1:${port}/index.html?${query}`);
  let last = '';
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => ({
      err: window.fewstepError ?? null,
      done: !!(window.fewstepResult && window.fewstepResult()),
      status: window.fewstepStatus ? window.fewstepStatus()?.status : null,
      vis: document.visibilityState,
    })).catch((e) => ({ err: e.message }));
    const line = `${s.status} [${s.vis}]`;
    if (line !== last) { console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}`); last = line; }
    if (s.err) { console.log(`error: ${s.err}`); break; }
    if (s.done) {
      const r = await page.evaluate(() => window.fewstepResult());
      console.log(`FINISHED in ${((Date.now() - t0) / 1000).toFixed(1)} s from opening the page ` +
        `(${r.values.length} values, ${r.ms.toFixed(0)} ms in the page)`);
      ok = true; break;
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
  if (!ok) console.log(`NOT FINISHED after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
} finally {
  await browser.close().catch(() => {});
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
  if (xvfb) { const gone = new Promise((ok) => xvfb.once('exit', ok)); xvfb.kill(); await gone; }
}
process.exit(ok ? 0 : 1);
