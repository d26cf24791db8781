// Serves web/ on 127.0.0.1, opens web/selftest.html in headless Chromium (WebGPU on SwiftShader),
// waits for the page's report, and fails unless every check passed and the page's Gaussian noise
// equals native fewstep's (the JSON file given as the first argument) to NOISE_TOL.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

const NOISE_TOL = 1e-5; // log/sin/cos rounding between drivers; the bits come from integer Philox
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../web');
const nativeReport = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { server, port } = await startServer(root);

const userDataDir = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--enable-unsafe-webgpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
});
let failed = 0, passed = 0;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`[page] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(`http://127.0.0.1:${port}/selftest.html`);
  await page.waitForFunction(() => window.__fewstepSelftest !== undefined, null, { timeout: 600_000 });
  const result = await page.evaluate(() => window.__fewstepSelftest);
  if (!result.ok) {
    console.log(`FAIL the page reported an error: ${result.error}`);
    failed++;
  } else {
    const r = result.report;
    console.log(`browser adapter: ${r.adapter} (${r.backend}), input seed ${r.seed}`);
    for (const c of r.checks) {
      console.log(`${c.passed ? 'PASS' : 'FAIL'} browser ${c.name}: ${c.detail}`);
      c.passed ? passed++ : failed++;
    }
    // WebGPU has no cooperative matrices: the page must say the tensor-core family is unavailable.
    const coopNote = (r.notes || []).find((n) => n.includes('coop GEMM family') && n.includes('unavailable'));
    console.log(`${coopNote ? 'PASS' : 'FAIL'} browser says the tensor-core family is unavailable: ${coopNote || '(no note)'}`);
    coopNote ? passed++ : failed++;
    const want = nativeReport.noise;
    const worst = Math.max(...r.noise.map((v, i) => Math.abs(v - want[i])));
    const same = r.noise.length === want.length && worst <= NOISE_TOL;
    console.log(`${same ? 'PASS' : 'FAIL'} browser noise equals native (${nativeReport.adapter}): max |diff| ${worst.toExponential(2)} over ${want.length} values`);
    same ? passed++ : failed++;
  }
} catch (e) {
  console.log(`FAIL ${e.message}`);
  failed++;
} finally {
  await browser.close();
  server.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
