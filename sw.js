// fewstep's service worker: a second visit fetches nothing it already has, and the page works
// offline after one visit. files.json (written by web/cache-manifest) names every file of the site
// with its SHA-256; a cached copy is used while its hash is the one files.json lists, so a new
// deploy refetches exactly the files whose bytes changed. Paths are taken relative to this
// worker's scope, so the site may live under a sub-path (GitHub Pages: /user/repo/).
// Responses carry `x-fewstep-cache: hit` (from the cache), `stored` (from the network, copied into
// the cache) or `offline` (network down: an older cached copy); anything files.json does not list
// is left to the network untouched. The wasm and its JavaScript glue are one build's pair
// (wasm-bindgen's imports change between builds): the page gets both new or both old, never one
// of each (SETS).

const SCOPE = new URL(self.registration.scope); // ends with '/'
// One cache per site: two sites on one origin (GitHub Pages) must not prune each other's files.
// index.html computes the same name (fewstepCacheInfo, fewstepCacheClear).
const CACHE = `fewstep ${SCOPE.pathname}`;
const MANIFEST = 'files.json';
const MANIFEST_TIMEOUT_MS = 3000;

const urlOf = (path) => new URL(path, SCOPE).href;

// Files that must come from the same build. A member is answered only once every member's new
// bytes have arrived (and are stored, quota permitting); otherwise the old copies of all of them.
const SETS = [['web/pkg/fewstep.js', 'web/pkg/fewstep_bg.wasm']];
const setOf = (path) => SETS.find((set) => set.includes(path));
// Members a set's refresh stored for the page before it asked for them: answered as `stored`
// (they came from the network during this visit), once.
const storedForPage = new Map();

// The manifest as last read: `manifestP` a promise of it (null: this site has none), `manifest`
// its value once settled, so that the fetch handler can leave unlisted requests alone without
// waiting. Both are lost whenever the browser stops the worker; they are then read again from the
// cache.
let manifestP = null;
let manifest;

function useManifest(promise) {
  manifest = undefined;
  manifestP = promise.then((m) => (manifest = m));
  return manifestP;
}

const valid = (m) => m && m.version === 1 && m.files && typeof m.files === 'object';

async function storedManifest() {
  try {
    const res = await (await caches.open(CACHE)).match(urlOf(MANIFEST));
    const m = res && (await res.json());
    return valid(m) ? m : null;
  } catch {
    return null;
  }
}

// files.json from the network, network-first: on a network failure, a timeout, a server error, a
// 404 or a broken file the stored copy. A deploy that lost files.json must not erase what a
// visitor kept for offline use; a site that never had one (a developer serving the repository
// root) has nothing stored, so nothing is cached. (The page's "Clear the cache" empties it.)
async function refreshManifest() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), MANIFEST_TIMEOUT_MS);
  let text;
  try {
    const res = await fetch(urlOf(MANIFEST), { cache: 'no-store', signal: abort.signal });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    text = await res.text(); // inside the timeout too: a stalled body counts as offline
  } catch {
    return storedManifest();
  } finally {
    clearTimeout(timer);
  }
  let m;
  try { m = JSON.parse(text); } catch { m = null; }
  if (!valid(m)) return storedManifest();
  try {
    const cache = await caches.open(CACHE);
    await cache.put(urlOf(MANIFEST), new Response(text, { headers: { 'content-type': 'application/json' } }));
    await prune(cache, m);
  } catch (e) {
    report(MANIFEST, e);
  }
  return m;
}

// Drops cached files the manifest no longer lists. A listed file with a stale hash stays until its
// new bytes replace it (same key), so a visit that goes offline half-way still has a copy.
async function prune(cache, m) {
  for (const req of await cache.keys()) {
    const path = pathOf(new URL(req.url));
    if (path !== MANIFEST && !(path in m.files)) await cache.delete(req);
  }
}

// The site-relative path of a URL in scope ('' is the scope's own page), or null.
function pathOf(url) {
  if (url.origin !== SCOPE.origin || !url.pathname.startsWith(SCOPE.pathname)) return null;
  let path;
  try { path = decodeURIComponent(url.pathname.slice(SCOPE.pathname.length)); } catch { return null; }
  return path === '' ? 'index.html' : path;
}

async function report(path, error) {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  for (const c of await self.clients.matchAll({ type: 'window', includeUncontrolled: true })) {
    c.postMessage({ type: 'fewstep-cache-error', path, error: text });
  }
}

const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

// Headers for a copy whose body is already decoded: a server's gzip encoding and its length would
// describe bytes this body no longer is; Vary could keep cache.match from finding it.
function plainHeaders(res, cacheState) {
  const h = new Headers(res.headers);
  for (const name of ['content-encoding', 'content-length', 'vary']) h.delete(name);
  if (!res.headers.has('content-encoding') && res.headers.has('content-length')) {
    h.set('content-length', res.headers.get('content-length'));
  }
  h.set('x-fewstep-cache', cacheState);
  return h;
}

// Reads the cache's branch of a network body to its end, hashes it and stores it. The page already
// has its own branch, so a failure here costs only the next visit a refetch; the page hears of it.
async function store(cache, path, entry, res, body) {
  let bytes;
  try {
    bytes = await new Response(body).arrayBuffer();
  } catch {
    return; // the network broke off: the page's branch failed the same way
  }
  const sha256 = hex(await crypto.subtle.digest('SHA-256', bytes));
  const headers = plainHeaders(res, 'hit');
  headers.set('content-length', String(bytes.byteLength));
  // The bytes' own hash, not the manifest's: a server (or CDN) still sending an old version gets
  // it kept for offline use only, and refetched next time.
  headers.set('x-fewstep-sha256', sha256);
  try {
    await cache.put(urlOf(path), new Response(bytes, { status: 200, statusText: res.statusText, headers }));
  } catch (e) {
    report(path, e);
    return;
  }
  if (sha256 !== entry.sha256) {
    report(path, `the server sent bytes with SHA-256 ${sha256}, files.json lists ${entry.sha256}`);
  }
}

// A member of a set: every stale member is fetched into memory and checked against files.json
// before anything is stored or answered. A member that does not arrive, or arrives with other
// bytes than files.json lists (a server still sending the old build), leaves the old set in
// place, answered as `offline`.
async function answerSet(path, set, m, cache) {
  const current = async (p) => {
    const cached = await cache.match(urlOf(p));
    return { p, cached, fresh: cached && cached.headers.get('x-fewstep-sha256') === m.files[p].sha256 };
  };
  const early = storedForPage.get(path);
  storedForPage.delete(path);
  if (early && early.sha256 === m.files[path].sha256) return early.response;
  const members = await Promise.all(set.filter((p) => m.files[p]).map(current));
  const mine = members.find((x) => x.p === path);
  if (members.every((x) => x.fresh)) return mine.cached;
  const arrived = [];
  let failed = null;
  for (const x of members.filter((x) => !x.fresh)) {
    try {
      const res = await fetch(urlOf(x.p), { cache: 'no-cache' });
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      const bytes = await res.arrayBuffer();
      const sha256 = hex(await crypto.subtle.digest('SHA-256', bytes));
      if (sha256 !== m.files[x.p].sha256) {
        throw new Error(`the server sent bytes with SHA-256 ${sha256}, files.json lists ${m.files[x.p].sha256}`);
      }
      arrived.push({ p: x.p, res, bytes, sha256 });
    } catch (e) {
      failed = { p: x.p, e };
      break;
    }
  }
  if (failed) {
    if (!(failed.e instanceof TypeError)) report(failed.p, failed.e); // a TypeError: no network
    if (members.every((x) => x.cached)) {
      return new Response(mine.cached.body, { status: 200, statusText: mine.cached.statusText, headers: plainHeaders(mine.cached, 'offline') });
    }
    throw failed.e; // nothing older to fall back on
  }
  let answer = mine.cached;
  for (const a of arrived) {
    const headers = plainHeaders(a.res, 'hit');
    headers.set('content-length', String(a.bytes.byteLength));
    headers.set('x-fewstep-sha256', a.sha256);
    try {
      await cache.put(urlOf(a.p), new Response(a.bytes, { status: 200, statusText: a.res.statusText, headers }));
    } catch (e) {
      report(a.p, e); // not kept (a full quota): the page still gets the bytes
    }
    const pageHeaders = plainHeaders(a.res, 'stored');
    pageHeaders.set('content-length', String(a.bytes.byteLength));
    const forPage = new Response(a.bytes, { status: 200, statusText: a.res.statusText, headers: pageHeaders });
    if (a.p === path) answer = forPage;
    else storedForPage.set(a.p, { sha256: a.sha256, response: forPage });
  }
  return answer;
}

async function answer(event, path, request) {
  const m = await manifestP;
  const entry = m && m.files[path];
  if (!entry) return fetch(request); // not ours after all (the manifest was still being read)
  const cache = await caches.open(CACHE);
  const set = setOf(path);
  if (set) return answerSet(path, set, m, cache);
  const cached = await cache.match(urlOf(path));
  if (cached && cached.headers.get('x-fewstep-sha256') === entry.sha256) return cached; // stored as 'hit'
  let res;
  try {
    // Revalidate any HTTP-cached copy: the hash says the one we have is not the one wanted.
    res = await fetch(urlOf(path), { cache: 'no-cache' });
  } catch (e) {
    if (!cached) throw e;
    return new Response(cached.body, { status: 200, statusText: cached.statusText, headers: plainHeaders(cached, 'offline') });
  }
  if (res.status !== 200 || !res.body) return res;
  // Two branches: the page reads its own as it arrives (its progress bar counts bytes), the other
  // goes into the cache; waitUntil keeps the worker alive until it is stored.
  const [toPage, toCache] = res.body.tee();
  event.waitUntil(store(cache, path, entry, res, toCache));
  return new Response(toPage, { status: 200, statusText: res.statusText, headers: plainHeaders(res, 'stored') });
}

self.addEventListener('install', (event) => {
  self.skipWaiting();
  // The page, the web manifest and the icons were fetched before this worker existed: fetch them
  // now (small), so that one visit leaves everything but the Train tab's data cached. The wasm and
  // the models come through the fetch handler when the page asks for them.
  event.waitUntil((async () => {
    const m = await useManifest(refreshManifest());
    if (!m) return;
    const cache = await caches.open(CACHE);
    for (const [path, entry] of Object.entries(m.files)) {
      if (path.startsWith('assets/') || path.startsWith('web/pkg/')) continue;
      try {
        const res = await fetch(urlOf(path), { cache: 'no-cache' });
        if (res.status === 200 && res.body) await store(cache, path, entry, res, res.body);
      } catch { /* fetched again on the next visit */ }
    }
  })().catch(() => {}));
});

self.addEventListener('activate', (event) => {
  // Control the page that registered us at once, so its own fetches (the wasm, the models) are
  // already kept on the first visit.
  event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const path = pathOf(new URL(request.url));
  if (path === null || path === MANIFEST || path === 'sw.js') return;
  if (request.mode === 'navigate') {
    if (path !== 'index.html') return;
    // Every visit starts here: ask for the current files.json before answering anything.
    useManifest(refreshManifest());
  } else if (!manifestP) {
    useManifest(storedManifest().then((m) => m ?? refreshManifest())); // the worker was restarted
  }
  if (manifest === null || (manifest && !(path in manifest.files))) return; // not ours: untouched
  event.respondWith(answer(event, path, request));
});
