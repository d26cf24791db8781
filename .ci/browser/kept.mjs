// Models kept in the browser's own storage (web/store.js, src/app/web_store.rs) in headless
// Chromium (WebGPU on SwiftShader), on one browser profile:
//  a. a model opened by a link (?model=FILE hosted beside the page) and a teacher made in the
//     Train tab (?train=tiny&updates=1) are kept: fewstepStore lists both, the link's bytes equal
//     the hosted file's;
//  b. the browser closed and started again on the profile: a plain visit lists both models again
//     (status: kept, and the model list), loaded from storage;
//  c. the Models tab's Remove (clicked on the canvas) deletes the made teacher's bytes: gone from
//     fewstepStore and, after a reload, from the model list; the linked model stays;
//  d. a full quota (CDP Storage.overrideQuotaForOrigin): opening another model by link leaves it
//     loaded for the visit, the Models tab names the file and says what to do, and after a reload
//     the model kept before is still there;
//  e. the IndexedDB fallback (?store=indexeddb, as a browser without OPFS gets): a model opened
//     by a link is kept there and listed after a reload, and its Remove deletes it.
// Prints the storage each model takes (for the issue's note).
// Usage: node .ci/browser/kept.mjs   (FEWSTEP_SITE=DIR serves a built site; a model file is
// copied into it for the test and removed after)
import { chromium } from 'playwright-core';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startServer } from './static-server.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const served = process.env.FEWSTEP_SITE ? path.resolve(process.env.FEWSTEP_SITE) : root;
const LINKED = 'kept-link.safetensors';
const BIG = 'kept-big.safetensors';
fs.copyFileSync(path.join(root, 'assets/fmnist-steps-1.f16.safetensors'), path.join(served, LINKED));
fs.copyFileSync(path.join(root, 'assets/fmnist-teacher.f16.safetensors'), path.join(served, BIG));
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const linkedSha = sha(fs.readFileSync(path.join(served, LINKED)));

let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };
const mb = (b) => `${(b / 1e6).toFixed(2)} MB`;

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
// Every model loaded (the bundled ones, the kept ones, the address's), or an error.
const loaded = (page) => page.waitForFunction(() => {
  if (window.fewstepError) return true;
  const s = window.fewstepStatus?.();
  return s && s.loadingExpected > 0 && s.loadingDone >= s.loadingExpected && s.kept?.kind;
}, null, { timeout: 600_000, polling: 500 });
const storeList = (page) => page.evaluate(async () =>
  (await window.fewstepStore.list('models')).map((e) => ({ name: e.name, origin: e.origin, stored: e.stored,
    bytes: e.bytes.length })));
const storeSha = (page, name) => page.evaluate(async (name) => {
  const e = await window.fewstepStore.get('models', name);
  if (!e) return null;
  const d = await crypto.subtle.digest('SHA-256', e.bytes);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}, name);
const until = async (f, ms = 60_000) => {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await new Promise((ok) => setTimeout(ok, 500))) {
    const v = await f();
    if (v) return v;
  }
  return f();
};

let browser = await launch();
try {
  // a. One model opened by a link, one made in the tab.
  let page = await browser.newPage();
  watch(page);
  await page.goto(`${origin}/index.html?model=${LINKED}&run=0`);
  await loaded(page);
  const kind = (await status(page))?.kept?.kind;
  await until(async () => (await status(page))?.kept?.models?.[LINKED]);
  await page.goto(`${origin}/index.html?train=tiny&updates=1&batch=2&seed=5`);
  await page.waitForFunction(() => window.fewstepError || window.fewstepDistilled?.()?.ended,
    null, { timeout: 600_000, polling: 1000 });
  const made = (await page.evaluate(() => window.fewstepDistilled()))?.students?.[0]?.name;
  await until(async () => (await status(page))?.kept?.models?.[made]);
  const listA = await storeList(page);
  const byName = (l, n) => l.find((e) => e.name === n);
  check(!!made && byName(listA, LINKED)?.origin === 'opened' && byName(listA, made)?.origin === 'made'
    && (await storeSha(page, LINKED)) === linkedSha,
    `kept in ${kind}: ${listA.map((e) => `${e.name} (${e.origin}, ${mb(e.stored)} stored for ${mb(e.bytes)})`).join(', ')}; ` +
    `the linked model's kept bytes equal the hosted file's`);
  await page.close();
  await browser.close();

  // b. A new browser on the same profile: a plain visit lists both again.
  browser = await launch();
  page = await browser.newPage();
  watch(page);
  await page.goto(`${origin}/index.html`);
  await loaded(page);
  let s = await status(page);
  check(s?.models?.includes(LINKED) && s?.models?.includes(made) && s.models.length === 6
    && s.kept?.models?.[LINKED] > 0 && s.kept?.models?.[made] > 0,
    `after closing the browser, a plain visit lists ${s?.models?.length} models: ${s?.models?.join(', ')}`);

  // c. Remove the made teacher in the Models tab (clicked where the app drew the button).
  const click = async (name) => {
    const r = (await status(page))?.rects?.[name];
    if (r) await page.mouse.click(r.x + r.w / 2, r.y + r.h / 2);
    return r;
  };
  await click('Models');
  await until(async () => (await status(page))?.rects?.[`remove:${made}`]);
  const button = await click(`remove:${made}`);
  const gone = await until(async () => !byName(await storeList(page), made) && !(await status(page))?.models?.includes(made));
  await page.reload();
  await loaded(page);
  s = await status(page);
  check(!!button && gone && !s?.models?.includes(made) && s?.models?.includes(LINKED) && !s?.kept?.models?.[made],
    `the Models tab's Remove deleted ${made}: not in storage, and after a reload the list is ${s?.models?.join(', ')}`);

  // d. A full quota: the storage refuses the next model, which stays loaded for the visit.
  const cdp = await browser.newCDPSession(page);
  const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + 200_000 });
  await page.goto(`${origin}/index.html?model=${BIG}&run=0`);
  await loaded(page);
  s = await until(async () => { const x = await status(page); return x?.kept?.errors?.length ? x : null; });
  const error = s?.kept?.errors?.[0] ?? '';
  // Chromium names a full quota QuotaExceededError, or (a write cut off for lack of room)
  // AbortError or NotReadableError: the message names the file, the cause and what to do.
  check(s?.models?.includes(BIG) && error.includes(BIG) && /storage is full|most often because it is full/.test(error)
    && /remove models/.test(error) && /Nothing kept before was lost/.test(error),
    `with the quota full, ${BIG} is loaded for the visit and the Models tab says: "${error}"`);
  await page.screenshot({ path: path.join(root, 'target/web-kept-quota.png') }).catch(() => {});
  await page.goto(`${origin}/index.html`);
  await loaded(page);
  s = await status(page);
  const listD = await storeList(page);
  check(s?.models?.includes(LINKED) && !s?.models?.includes(BIG) && byName(listD, LINKED)
    && (await storeSha(page, LINKED)) === linkedSha && !listD.some((e) => e.name === BIG),
    `after the refusal, a reload still lists the model kept before (${s?.models?.join(', ')}); storage holds ` +
    `${listD.map((e) => e.name).join(', ')}`);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin });

  // e. The IndexedDB fallback.
  await page.goto(`${origin}/index.html?store=indexeddb&model=${BIG}&run=0`);
  await loaded(page);
  const idbKind = (await status(page))?.kept?.kind;
  await until(async () => (await status(page))?.kept?.models?.[BIG]);
  await page.goto(`${origin}/index.html?store=indexeddb`);
  await loaded(page);
  s = await status(page);
  const listE = await storeList(page);
  const keptE = s?.models?.includes(BIG) && byName(listE, BIG)?.origin === 'opened' && !s?.models?.includes(LINKED);
  await click('Models');
  await until(async () => (await status(page))?.rects?.[`remove:${BIG}`]);
  await click(`remove:${BIG}`);
  const goneE = await until(async () => !byName(await storeList(page), BIG));
  check(idbKind === 'indexeddb' && keptE && goneE,
    `IndexedDB (${idbKind}): ${BIG} kept and listed after a reload (${s?.models?.join(', ')}), then removed: ${goneE}`);
} catch (e) {
  check(false, String(e.message).split('\n').slice(0, 3).join(' | '));
} finally {
  await browser.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  for (const f of [LINKED, BIG]) fs.rmSync(path.join(served, f), { force: true });
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
