// Serves the repository root (index.html, web/pkg, assets/), or the folder DIR that web/site
// built, on http://127.0.0.1:PORT (default 8000). WebGPU needs a secure context: 127.0.0.1 and
// localhost count as one, other hosts need HTTPS.
// Usage: node web/serve.mjs [PORT] [DIR]
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const root = process.argv[3] ? path.resolve(process.argv[3]) : repo;
const port = Number(process.argv[2] ?? 8000);
const types = {
  '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json', '.png': 'image/png', '.safetensors': 'application/octet-stream',
};
if (!fs.existsSync(path.join(root, 'web/pkg/fewstep.js'))) {
  console.error(`${path.join(root, 'web/pkg/fewstep.js')} is missing: build the web app first ` +
    '(web/build for the repository root, web/site DIR for a folder to host)');
  process.exit(1);
}
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const rel = url.pathname === '/' ? '/index.html' : decodeURIComponent(url.pathname);
  const file = path.join(root, path.normalize(rel));
  if (!file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404); res.end('not found'); return;
  }
  res.writeHead(200, {
    'content-type': types[path.extname(file)] ?? 'application/octet-stream',
    'content-length': fs.statSync(file).size,
  });
  fs.createReadStream(file).pipe(res);
}).listen(port, '127.0.0.1', () => {
  console.log(`fewstep: http://127.0.0.1:${port}/  (e.g. http://127.0.0.1:${port}/?model=fmnist-4step&steps=4&seed=1)`);
});
