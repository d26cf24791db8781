// What the page keeps in the browser's own storage, beyond the service worker's copy of the site:
// the models a visitor made or opened in the tab ('models'), and the checkpoint of an in-tab run
// ('runs'). The origin-private file system (OPFS) where the browser has it, else IndexedDB. The
// app (src/app/web_store.rs) calls window.fewstepStore; tests call it too.
//
// Every entry is one file: a small header (magic, the JSON length, JSON naming the entry and the
// payload's length), then the payload. A write goes to NAME.part and is then moved over NAME, so
// a tab closed mid-write leaves the old entry whole; a .part found complete on the next listing
// (the move was cut off) is finished, an incomplete one deleted. Two sites on one origin (GitHub
// Pages) keep separate folders, named by the page's path as the cache is.

const SCOPE = new URL('./', location.href).pathname;
const ROOT = `fewstep ${encodeURIComponent(SCOPE)}`;
const MAGIC = [0x46, 0x53, 0x4b, 0x31]; // "FSK1"
const SPACES = ['models', 'runs'];

const fileName = (name) => `${encodeURIComponent(name)}.fsk`;
const nameOf = (file) => decodeURIComponent(file.slice(0, -'.fsk'.length));

function encode(name, info, bytes) {
  const json = new TextEncoder().encode(JSON.stringify({ name, length: bytes.byteLength, ...info }));
  const out = new Uint8Array(8 + json.length + bytes.byteLength);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, json.length, true);
  out.set(json, 8);
  out.set(bytes, 8 + json.length);
  return out;
}

// {name, length, kept, …info, json (the same as text), bytes} or null when the entry is cut
// short or not ours.
function decode(buf) {
  const a = new Uint8Array(buf);
  if (a.length < 8 || MAGIC.some((m, i) => a[i] !== m)) return null;
  const n = new DataView(a.buffer, a.byteOffset).getUint32(4, true);
  if (8 + n > a.length) return null;
  let info;
  try { info = JSON.parse(new TextDecoder().decode(a.subarray(8, 8 + n))); } catch { return null; }
  if (typeof info?.name !== 'string' || a.length !== 8 + n + info.length) return null;
  return { ...info, json: JSON.stringify(info), bytes: a.subarray(8 + n) };
}

// OPFS: one folder per space under the site's folder.
const opfs = {
  kind: 'opfs',
  async dir(space) {
    const root = await navigator.storage.getDirectory();
    const site = await root.getDirectoryHandle(ROOT, { create: true });
    return site.getDirectoryHandle(space, { create: true });
  },
  async put(space, name, data) {
    const dir = await this.dir(space);
    const final = fileName(name);
    const part = await dir.getFileHandle(`${final}.part`, { create: true });
    try {
      const w = await part.createWritable();
      try {
        await w.write(data);
        await w.close();
      } catch (e) {
        await w.abort().catch(() => {});
        throw e;
      }
      try {
        await part.move(dir, final);
      } catch {
        // A browser whose move() does not replace an existing file: the old entry goes first;
        // a tab closed between the two leaves a whole .part, which all() finishes.
        await dir.removeEntry(final).catch(() => {});
        await part.move(dir, final);
      }
    } catch (e) {
      await dir.removeEntry(`${final}.part`).catch(() => {});
      throw e;
    }
  },
  async read(dir, file) {
    return (await (await dir.getFileHandle(file)).getFile()).arrayBuffer();
  },
  async all(space) {
    const dir = await this.dir(space);
    const files = [];
    for await (const [file, handle] of dir.entries()) if (handle.kind === 'file') files.push(file);
    const out = [];
    for (const file of files.filter((f) => f.endsWith('.fsk.part'))) {
      // A write cut off: finished when the bytes are all there (only the move was missed).
      const final = file.slice(0, -'.part'.length);
      const whole = !files.includes(final) && decode(await this.read(dir, file).catch(() => new ArrayBuffer(0)));
      if (whole) {
        await (await dir.getFileHandle(file)).move(dir, final).catch(() => {});
        files.push(final);
      } else {
        await dir.removeEntry(file).catch(() => {});
      }
    }
    for (const file of files.filter((f) => f.endsWith('.fsk'))) {
      const entry = decode(await this.read(dir, file).catch(() => new ArrayBuffer(0)));
      if (entry && entry.name === nameOf(file)) out.push({ ...entry, stored: 8 + entry.bytes.byteLength });
    }
    return out;
  },
  async get(space, name) {
    const dir = await this.dir(space);
    const buf = await this.read(dir, fileName(name)).catch(() => null);
    return buf && decode(buf);
  },
  async remove(space, name) {
    const dir = await this.dir(space);
    try { await dir.removeEntry(fileName(name)); return true; } catch { return false; }
  },
};

// IndexedDB: one record per entry (a transaction is atomic, so no .part is needed).
const idb = {
  kind: 'indexeddb',
  db: null,
  open() {
    this.db ??= new Promise((ok, fail) => {
      const r = indexedDB.open(ROOT, 1);
      r.onupgradeneeded = () => r.result.createObjectStore('entries');
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    return this.db;
  },
  async tx(mode, f) {
    const db = await this.open();
    return new Promise((ok, fail) => {
      const t = db.transaction('entries', mode);
      const result = f(t.objectStore('entries'));
      t.oncomplete = () => ok(result.result);
      t.onerror = t.onabort = () => fail(t.error ?? new Error('IndexedDB transaction aborted'));
    });
  },
  async put(space, name, data) {
    await this.tx('readwrite', (s) => s.put(data.buffer, `${space}/${name}`));
  },
  async all(space) {
    const keys = await this.tx('readonly', (s) => s.getAllKeys(IDBKeyRange.bound(`${space}/`, `${space}/\uffff`)));
    const out = [];
    for (const key of keys) {
      const entry = decode(await this.tx('readonly', (s) => s.get(key)));
      if (entry) out.push({ ...entry, stored: 8 + entry.bytes.byteLength });
    }
    return out;
  },
  async get(space, name) {
    const buf = await this.tx('readonly', (s) => s.get(`${space}/${name}`));
    return buf ? decode(buf) : null;
  },
  async remove(space, name) {
    const had = await this.get(space, name);
    await this.tx('readwrite', (s) => s.delete(`${space}/${name}`));
    return !!had;
  },
};

// `?store=indexeddb` in the address uses IndexedDB even where OPFS works (the fallback's test;
// also a way out should a browser's OPFS misbehave).
async function pickBackend() {
  if (new URLSearchParams(location.search).get('store') === 'indexeddb' && self.indexedDB) return idb;
  try {
    if (navigator.storage?.getDirectory && self.FileSystemFileHandle?.prototype.createWritable
        && self.FileSystemFileHandle?.prototype.move) {
      await opfs.dir('models');
      return opfs;
    }
  } catch { /* e.g. a private window without OPFS: try IndexedDB */ }
  if (self.indexedDB) return idb;
  return null;
}
const backend = pickBackend();

const space = (s) => {
  if (!SPACES.includes(s)) throw new Error(`no storage space '${s}'`);
  return s;
};
async function need() {
  const b = await backend;
  if (!b) throw new Error('this browser offers the page no storage (neither OPFS nor IndexedDB)');
  return b;
}

// A DOMException's name survives into the message: the app tells a full quota apart by it.
const described = (e) => Object.assign(new Error(`${e?.name ?? 'Error'}: ${e?.message ?? e}`), { name: e?.name ?? 'Error' });

window.fewstepStore = {
  // 'opfs', 'indexeddb' or null.
  kind: async () => (await backend)?.kind ?? null,
  // Keeps bytes under name (replacing what was kept there only once the new bytes are whole).
  // info: extra JSON kept with it. Resolves to the bytes the entry takes.
  async put(s, name, bytes, info = {}) {
    const b = await need();
    // The bytes as they are, not a Blob: Chromium may keep a large Blob in its on-disk blob
    // store, whose reads fail (NotReadableError) when the origin's quota is full, hiding the
    // quota error this write would give.
    const data = encode(name, { kept: Date.now(), ...info }, bytes);
    try {
      await b.put(space(s), name, data);
    } catch (e) {
      throw described(e);
    }
    // Asked once something is kept: without it the browser may evict the storage when space
    // runs low.
    if (!(await navigator.storage?.persisted?.().catch(() => true))) {
      await navigator.storage?.persist?.().catch(() => {});
    }
    return data.byteLength;
  },
  // Every entry of a space: [{name, length, kept, stored, json, bytes: Uint8Array, …info}].
  async list(s) {
    const b = await backend;
    return b ? b.all(space(s)) : [];
  },
  async get(s, name) {
    const b = await backend;
    return b ? b.get(space(s), name) : null;
  },
  // The names of a space's entries.
  async names(s) {
    return (await this.list(s)).map((e) => e.name);
  },
  // Resolves to whether there was an entry to delete.
  async remove(s, name) {
    const b = await backend;
    return b ? b.remove(space(s), name) : false;
  },
};
