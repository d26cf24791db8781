// The page's cache (sw.js, files.json from web/cache-manifest) in headless Chromium (WebGPU on
// SwiftShader): a second visit fetches nothing it already has, the page works offline after one
// visit, a changed file is fetched alone, and the page is installable. Works on a copy of the
// static site (FEWSTEP_SITE, default target/site) served under a sub-path, /user/fewstep/, as
// GitHub Pages serves a project, by a server of its own that logs every request and can refuse
// them all (it destroys the socket, as a dropped connection would), with a fresh browser profile:
//  a. first visit: the worker controls the page, the bundled models load and a 4-step run ends;
//     the cache then holds every file files.json lists but the Train tab's data, which a fetch()
//     from the page then adds;
//  b. reload with the server refusing everything: the page starts, loads every model and samples
//     the same values, bit for bit; no request succeeded; the data is still there for fetch();
//  c. one model file changed (new bytes, new hash in files.json): a reload fetches that file and no
//     other model, nor the wasm;
//  d. window.fewstepCacheInfo() lists the files and sizes; fewstepCacheClear() empties the cache;
//  e. Chromium's installability check (CDP Page.getInstallabilityErrors) finds nothing missing;
//  f. a store that fails (quota cut to 1 MB over CDP) still answers the page in full and reaches
//     window.fewstepCacheErrors;
//  g. a deploy that lost files.json (404): the page works, the cache keeps every file and the
//     model kept in the browser's storage is listed; then offline, the page still works with it;
//     then files.json is back and a reload fetches no listed file;
//  h. a new build (the wasm and its JavaScript glue both changed) whose wasm does not arrive: the
//     page runs the old pair (both answered `offline`), never the new glue with the old wasm, and
//     the cache keeps the old pair; once the wasm arrives, the reload gets the new pair.
// Usage: FEWSTEP_SITE=target/site node .ci/browser/offline.mjs
import { chromium } from 'playwright-core';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const source = path.resolve(root, process.env.FEWSTEP_SITE ?? 'target/site');
const BASE = '/user/fewstep/';
const QUERY = 'model=fmnist-4step&steps=4&seed=1&count=4';
const CHANGED = 'assets/fmnist-steps-1.f16.safetensors';
const KEPT = 'kept.safetensors'; // step g: opened by a link once, then only in the browser's storage
const LOAD_TIMEOUT = 600_000; // a page load on SwiftShader takes tens of seconds, more on a busy machine

let failed = 0, passed = 0;
const check = (ok, text) => { console.log(`${ok ? 'PASS' : 'FAIL'} ${text}`); ok ? passed++ : failed++; };
const mb = (b) => `${(b / 1e6).toFixed(2)} MB`;

// The site copy, which (c) changes.
const site = fs.mkdtempSync('/tmp/fewstep-offline-site-');
fs.cpSync(source, site, { recursive: true });
const manifestFile = path.join(site, 'files.json');

// Serves `site` under BASE; `log` gets {path, status, bytes} per request ('refused' while `refuse`).
const types = {
  '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json',
  '.webmanifest': 'application/manifest+json', '.png': 'image/png', '.safetensors': 'application/octet-stream',
};
const net = { refuse: false, refusePaths: new Set(), log: [] };
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const rel = url.pathname.startsWith(BASE) ? decodeURIComponent(url.pathname.slice(BASE.length)) || 'index.html' : null;
  if (net.refuse || net.refusePaths.has(rel)) { net.log.push({ path: rel ?? url.pathname, status: 'refused', bytes: 0 }); req.socket.destroy(); return; }
  const file = rel === null ? null : path.join(site, path.normalize(rel));
  if (!file || !file.startsWith(site) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    net.log.push({ path: rel ?? url.pathname, status: 404, bytes: 0 });
    res.writeHead(404); res.end('not found'); return;
  }
  const bytes = fs.statSync(file).size;
  net.log.push({ path: rel, status: 200, bytes });
  // no-store: what a later visit gets must come from the worker's cache, not the HTTP cache.
  res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream',
    'content-length': bytes, 'cache-control': 'no-store' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;
const served = () => net.log.filter((r) => r.status === 200);
const servedBytes = () => served().reduce((n, r) => n + r.bytes, 0);

// Launched as app.mjs launches it (WebGPU on SwiftShader).
const common = ['--no-sandbox', '--disable-gpu-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];
const webgpu = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
const profile = fs.mkdtempSync('/tmp/fewstep-chromium-');
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1100, height: 760 },
  args: ['--headless=new', ...common, ...webgpu],
});

// In the page: what the worker's cache holds, {path: stored SHA-256} (the name index.html uses).
const cachedHashes = async () => {
  const name = `fewstep ${new URL('./', location.href).pathname}`;
  const base = new URL('./', location.href).href;
  const out = {};
  if (!(await caches.has(name))) return out;
  const cache = await caches.open(name);
  for (const req of await cache.keys()) {
    out[req.url.slice(base.length)] = (await cache.match(req))?.headers.get('x-fewstep-sha256') ?? null;
  }
  return out;
};
// In the page: fetch() a path, as the app would; the worker's header and the size that arrived.
const pageFetch = async (p) => {
  try {
    const r = await fetch(p);
    return { status: r.status, cache: r.headers.get('x-fewstep-cache'), bytes: (await r.arrayBuffer()).byteLength };
  } catch (e) { return { error: String(e) }; }
};

try {
  const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  const listed = Object.keys(manifest.files);
  const data = listed.filter((p) => p.startsWith('assets/fmnist-10k/'));
  const heavy = listed.filter((p) => p.startsWith('web/pkg/') || p.endsWith('.safetensors'));
  console.log(`serving a copy of ${source} at ${origin}${BASE}: files.json lists ${listed.length} files, ` +
    `${mb(Object.values(manifest.files).reduce((n, f) => n + f.bytes, 0))}`);
  const page = await browser.newPage();
  // Every text the page's status line showed (the loading line says "cached" on a cache hit).
  await page.addInitScript(() => {
    window.__statusTexts = [];
    document.addEventListener('DOMContentLoaded', () => {
      const el = document.getElementById('status');
      if (el) new MutationObserver(() => window.__statusTexts.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
    });
  });
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[page] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  // The worker's header on every response the page got, by site path.
  let headers = {};
  page.on('response', (r) => {
    if (r.url().startsWith(origin + BASE)) headers[new URL(r.url()).pathname.slice(BASE.length) || 'index.html'] = r.headers()['x-fewstep-cache'] ?? 'none';
  });
  const headerCount = (paths, value) => paths.filter((p) => headers[p] === value).length;
  // Opens `url` and waits until every model is loaded and the page's own 4-step run has ended.
  // The models a visit waits for: the 4 bundled ones, and from step g on the one kept in the
  // browser's storage.
  let expectModels = 4;
  const visit = async (url, want = expectModels) => {
    headers = {};
    const t0 = Date.now();
    await page.goto(url, { timeout: LOAD_TIMEOUT });
    await page.waitForFunction((want) => {
      if (window.fewstepError) return true;
      const s = window.fewstepStatus?.(), r = window.fewstepResult?.();
      return s && r && s.loadingDone >= s.loadingExpected && s.models.length === want;
    }, want, { timeout: LOAD_TIMEOUT, polling: 500 });
    const got = await page.evaluate(() => ({ error: window.fewstepError ?? null, status: window.fewstepStatus(),
      statusTexts: window.__statusTexts,
      result: window.fewstepResult(), controller: navigator.serviceWorker.controller?.scriptURL ?? null }));
    return { ...got, secs: (Date.now() - t0) / 1000 };
  };
  // Polls the page's cache until `paths` are stored with `hashes` (or 60 s pass).
  const waitStored = async (paths, hashes = manifest.files) => {
    let have = {};
    for (const t0 = Date.now(); Date.now() - t0 < 60_000; await new Promise((ok) => setTimeout(ok, 500))) {
      have = await page.evaluate(cachedHashes);
      if (paths.every((p) => have[p] === hashes[p].sha256)) break;
    }
    return paths.filter((p) => have[p] !== hashes[p].sha256);
  };

  // a. The first visit.
  const first = await visit(`${origin}${BASE}index.html?${QUERY}`);
  const firstBytes = servedBytes();
  check(!first.error && first.controller?.endsWith(`${BASE}sw.js`) && first.result?.values?.length > 0,
    `first visit: the worker controls the page, ${first.status?.models.length} models loaded, a ${first.result?.steps}-step ` +
    `run of ${first.result?.model} ended (${first.result?.values?.length} values) after ${first.secs.toFixed(1)} s; ` +
    `${served().length} requests, ${mb(firstBytes)} from the server${first.error ? `; error: ${first.error}` : ''}`);
  check(headerCount(heavy, 'stored') === heavy.length,
    `first visit: the wasm, its JS and the models came through the worker (x-fewstep-cache: stored): ` +
    `${JSON.stringify(Object.fromEntries(heavy.map((p) => [p, headers[p]])))}`);
  const missing = await waitStored(listed.filter((p) => !data.includes(p)));
  check(missing.length === 0, `after the first visit the cache holds all ${listed.length - data.length} files ` +
    `files.json lists outside fmnist-10k, with their hashes${missing.length ? `; missing: ${missing.join(', ')}` : ''}`);
  const dataFetch = [];
  for (const p of data) dataFetch.push(await page.evaluate(pageFetch, p));
  const dataMissing = await waitStored(data);
  check(dataFetch.every((r, i) => r.status === 200 && r.cache === 'stored' && r.bytes === manifest.files[data[i]].bytes)
    && dataMissing.length === 0,
    `fetch() of the Train tab's data from the page is stored too: ${JSON.stringify(dataFetch)}`);
  const again = await page.evaluate(pageFetch, heavy[0]);
  check(again.cache === 'hit' && again.bytes === manifest.files[heavy[0]].bytes,
    `a second fetch() of ${heavy[0]} is answered from the cache: ${JSON.stringify(again)}`);

  // b. Offline: every request refused; opened at the scope's root this time (same cached page).
  net.refuse = true; net.log = [];
  const offline = await visit(`${origin}${BASE}?${QUERY}`);
  const same = offline.result?.values?.length === first.result.values.length
    && offline.result.values.every((v, i) => v === first.result.values[i]);
  check(!offline.error && offline.status?.models.length === 4 && same,
    `offline: the page started, loaded ${offline.status?.models.length} models and sampled the first visit's values ` +
    `exactly (${offline.result?.values?.length} values) in ${offline.secs.toFixed(1)} s` +
    `${offline.error ? `; error: ${offline.error}` : ''}`);
  check(served().length === 0 && headerCount(heavy, 'hit') === heavy.length,
    `offline: no request succeeded (${net.log.length} refused: ${[...new Set(net.log.map((r) => r.path))].join(', ')}); ` +
    `the wasm, JS and models were cache hits`);
  const said = (v, word) => v.statusTexts.some((t) => t.includes('Loading models') && t.includes(word));
  check(said(offline, 'cached') && said(first, ' MB') && !said(first, 'cached'),
    `the loading line counts MB on the first visit ("${first.statusTexts.find((t) => t.includes('MB'))}") and says ` +
    `cached offline ("${offline.statusTexts.find((t) => t.includes('cached'))}")`);
  const offlineData = await page.evaluate(pageFetch, data[0]);
  check(offlineData.cache === 'hit' && offlineData.bytes === manifest.files[data[0]].bytes,
    `offline: fetch('${data[0]}') still works: ${JSON.stringify(offlineData)}`);

  // c. A new deploy that changes one model file.
  net.refuse = false; net.log = [];
  const replacement = fs.readFileSync(path.join(site, 'assets/fmnist-steps-2.f16.safetensors'));
  fs.writeFileSync(path.join(site, CHANGED), replacement);
  const changed = { ...manifest.files, [CHANGED]: {
    sha256: crypto.createHash('sha256').update(replacement).digest('hex'), bytes: replacement.length } };
  fs.writeFileSync(manifestFile, JSON.stringify({ version: 1, files: changed }));
  const third = await visit(`${origin}${BASE}index.html?${QUERY}`);
  const fetchedListed = served().map((r) => r.path).filter((p) => listed.includes(p));
  check(!third.error && third.status?.models.length === 4 && fetchedListed.length === 1 && fetchedListed[0] === CHANGED
    && headers[CHANGED] === 'stored',
    `after ${CHANGED} changed, the reload fetched only it (${mb(servedBytes())} in ${served().length} requests: ` +
    `${served().map((r) => r.path).join(', ')}) and loaded ${third.status?.models.length} models in ${third.secs.toFixed(1)} s`);
  const notNew = await waitStored([CHANGED], changed);
  check(notNew.length === 0, `the cache now holds the new ${CHANGED} (new hash)`);

  // g. files.json answers 404 (a deploy that lost it), then the network goes, then it is back;
  // a model opened by a link before (hosted beside the page, not in files.json) is kept in the
  // browser's storage (web/store.js) and listed on every visit of the three.
  fs.copyFileSync(path.join(site, 'assets/fmnist-steps-1.f16.safetensors'), path.join(site, KEPT));
  await visit(`${origin}${BASE}index.html?model=${KEPT}&steps=1&seed=1&count=4`, 5);
  for (const t0 = Date.now(); Date.now() - t0 < 60_000; await new Promise((ok) => setTimeout(ok, 500))) {
    if ((await page.evaluate(() => window.fewstepStatus()))?.kept?.models?.[KEPT]) break;
  }
  fs.rmSync(path.join(site, KEPT));
  expectModels = 5;
  const listsKept = (v) => v.status?.models.includes(KEPT);
  fs.renameSync(manifestFile, `${manifestFile}.away`);
  net.log = [];
  const lost = await visit(`${origin}${BASE}index.html?${QUERY}`);
  const lostMissing = await waitStored(listed, changed);
  check(!lost.error && lost.status?.models.length === expectModels && listsKept(lost) && lostMissing.length === 0
    && net.log.some((r) => r.path === 'files.json' && r.status === 404),
    `files.json answering 404: the page loaded ${lost.status?.models.length} models and the cache still holds ` +
    `all ${listed.length} files${lostMissing.length ? `; gone: ${lostMissing.join(', ')}` : ''}`);
  net.refuse = true; net.log = [];
  const lostOffline = await visit(`${origin}${BASE}index.html?${QUERY}`);
  check(!lostOffline.error && lostOffline.status?.models.length === expectModels && listsKept(lostOffline)
    && served().length === 0,
    `then offline: the page loaded ${lostOffline.status?.models.length} models from the cache in ` +
    `${lostOffline.secs.toFixed(1)} s${lostOffline.error ? `; error: ${lostOffline.error}` : ''}`);
  net.refuse = false;
  fs.renameSync(`${manifestFile}.away`, manifestFile);
  net.log = [];
  const back = await visit(`${origin}${BASE}index.html?${QUERY}`);
  const refetched = served().map((r) => r.path).filter((p) => listed.includes(p));
  check(!back.error && back.status?.models.length === expectModels && listsKept(back) && refetched.length === 0,
    `files.json back (200): the reload fetched none of the listed files (${refetched.join(', ') || 'none'})`);

  // h. A new build whose wasm does not arrive (its glue does).
  const glue = 'web/pkg/fewstep.js', wasm = 'web/pkg/fewstep_bg.wasm';
  const before = await page.evaluate(cachedHashes);
  fs.appendFileSync(path.join(site, glue), '\n// rebuilt (offline.mjs, step h)\n');
  // A custom section (id 0, 8 bytes: the name's length 7 and "fewstep"): a valid, different wasm.
  fs.appendFileSync(path.join(site, wasm), Buffer.concat([Buffer.from([0, 8, 7]), Buffer.from('fewstep')]));
  const entryOf = (p) => {
    const bytes = fs.readFileSync(path.join(site, p));
    return { sha256: crypto.createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
  };
  const rebuilt = { ...changed, [glue]: entryOf(glue), [wasm]: entryOf(wasm) };
  fs.writeFileSync(manifestFile, JSON.stringify({ version: 1, files: rebuilt }));
  net.refusePaths = new Set([wasm]); net.log = [];
  const half = await visit(`${origin}${BASE}index.html?${QUERY}`);
  const kept = await page.evaluate(cachedHashes);
  check(!half.error && half.status?.models.length === expectModels && headers[glue] === 'offline' && headers[wasm] === 'offline'
    && kept[glue] === before[glue] && kept[wasm] === before[wasm],
    `a new build whose wasm is refused: the page ran the old pair (glue ${headers[glue]}, wasm ${headers[wasm]}), ` +
    `${half.status?.models.length} models; the cache kept the old pair: ${kept[glue] === before[glue] && kept[wasm] === before[wasm]}` +
    `${half.error ? `; error: ${half.error}` : ''}`);
  net.refusePaths = new Set(); net.log = [];
  const whole = await visit(`${origin}${BASE}index.html?${QUERY}`);
  const newPair = await waitStored([glue, wasm], rebuilt);
  check(!whole.error && whole.status?.models.length === expectModels && headers[glue] === 'stored' && headers[wasm] === 'stored'
    && newPair.length === 0,
    `once the wasm arrives, the reload got the new pair (glue ${headers[glue]}, wasm ${headers[wasm]}) and the cache ` +
    `holds it${newPair.length ? `; not yet: ${newPair.join(', ')}` : ''}${whole.error ? `; error: ${whole.error}` : ''}`);

  // e. Installability, as Chromium judges it (the worker, the web manifest, its icons).
  const cdp = await browser.newCDPSession(page);
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  const appManifest = await cdp.send('Page.getAppManifest').catch((e) => ({ errors: [{ message: String(e) }] }));
  console.log(`installability errors: ${JSON.stringify(installabilityErrors)}; manifest errors: ${JSON.stringify(appManifest.errors)}`);
  check(installabilityErrors.length === 0 && appManifest.errors.length === 0,
    `Chromium finds the page installable (Page.getInstallabilityErrors: ${installabilityErrors.length} errors)`);

  // d. What the app will show, and clearing.
  const info = await page.evaluate(() => window.fewstepCacheInfo());
  const sizes = Object.fromEntries(info.files.map((f) => [f.path, f.bytes]));
  check(listed.every((p) => sizes[p] === rebuilt[p].bytes) && 'files.json' in sizes
    && info.bytes === info.files.reduce((n, f) => n + f.bytes, 0) && info.errors.length === 0,
    `fewstepCacheInfo(): ${info.files.length} files, ${mb(info.bytes)} (usage ${info.usage === null ? null : mb(info.usage)}, ` +
    `quota ${info.quota === null ? null : mb(info.quota)}, persisted ${info.persisted}, ${info.errors.length} errors)`);
  // The Models tab's section shows the same, and its button clears it (clicked on the canvas where
  // the app says it drew it).
  const click = async (name) => {
    const r = (await page.evaluate(() => window.fewstepStatus()))?.rects?.[name];
    if (r) await page.mouse.click(r.x + r.w / 2, r.y + r.h / 2);
    return r;
  };
  const appCache = async (pred) => {
    for (const t0 = Date.now(); Date.now() - t0 < 60_000; await new Promise((ok) => setTimeout(ok, 500))) {
      const c = (await page.evaluate(() => window.fewstepStatus()))?.cache;
      if (pred(c)) return c;
    }
    return (await page.evaluate(() => window.fewstepStatus()))?.cache;
  };
  await click('Models');
  const shown = await appCache((c) => c?.files > 0);
  check(shown?.files === info.files.length && Math.abs(shown.bytes - info.bytes) < 1,
    `the Models tab shows the cache: ${shown?.files} files, ${mb(shown?.bytes ?? 0)}`);
  await page.screenshot({ path: path.join(root, 'target/web-models-cache.png') }).catch(() => {});
  const button = await click('clearCache');
  const cleared = await appCache((c) => c?.files === 0);
  const after = await page.evaluate(() => window.fewstepCacheInfo());
  check(button && cleared?.files === 0 && after.files.length === 0 && after.bytes === 0,
    `its "Clear the cache" button emptied it: "${cleared?.note}"; afterwards ${after.files.length} files, ${after.bytes} bytes`);

  // f. Storing fails (a 1 MB quota): the page still gets the whole file and hears why it is not kept.
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1e6 });
  const big = await page.evaluate(pageFetch, heavy.find((p) => p.endsWith('.safetensors')));
  await page.waitForFunction(() => window.fewstepCacheErrors.length > 0, null, { timeout: 30_000, polling: 200 }).catch(() => {});
  const errors = await page.evaluate(() => window.fewstepCacheErrors);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  check(big.status === 200 && big.bytes > 1e6 && errors.length > 0 && errors.some((e) => /quota/i.test(e.error)),
    `with a 1 MB quota the page still got ${mb(big.bytes ?? 0)} (${big.cache}) and window.fewstepCacheErrors says ${JSON.stringify(errors)}`);
  console.log(`figures: first visit ${mb(firstBytes)} from the server in ${first.secs.toFixed(1)} s; offline visit 0 bytes ` +
    `in ${offline.secs.toFixed(1)} s; after one model changed ${mb(replacement.length)} in ${third.secs.toFixed(1)} s`);
} catch (e) {
  check(false, String(e.message).split('\n').slice(0, 3).join(' | '));
} finally {
  await browser.close();
  server.close();
  fs.rmSync(profile, { recursive: true, force: true });
  fs.rmSync(site, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
