// Draws the page's icons, web/icon-192.png and web/icon-512.png (the sizes browsers want to offer
// installing a web app): three steps rising to the right, the lowest still grainy with noise, the
// top one clean: an image reached in a few steps. Written as PNG by hand (node's zlib deflates the
// pixels) so that no image tool is needed. The design stays inside the middle 80%, so launchers
// that crop icons to a circle keep all of it.
// Usage: node web/make-icons.mjs   (rewrites both files; commit them)
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const BACKGROUND = [0x1b, 0x1b, 0x1b]; // the page's own background (index.html)
const ORANGE = [0xf0, 0xa0, 0x50]; // the page's heading colour
const GREY = [0x55, 0x55, 0x55];
// Steps as [left, top, right] in units of the icon's side (all end at the same floor), and the share
// of each step's grains that are already orange.
const FLOOR = 0.78;
const STEPS = [[0.2, 0.6, 0.38, 0.45], [0.41, 0.42, 0.59, 0.8], [0.62, 0.24, 0.8, 1]];
const GRAIN = 1 / 48; // grain size, relative to the icon, so both sizes look alike

// A fixed pseudo-random number in [0, 1) for a grain (integer hash, no state).
function noise(i, j) {
  let h = Math.imul(i, 0x27d4eb2d) ^ Math.imul(j, 0x165667b1);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  return ((h ^ (h >>> 13)) >>> 0) / 2 ** 32;
}

function colourAt(u, v) {
  for (const [l, t, r, share] of STEPS) {
    if (u >= l && u < r && v >= t && v < FLOOR) {
      return noise(Math.floor(u / GRAIN), Math.floor(v / GRAIN)) < share ? ORANGE : GREY;
    }
  }
  return BACKGROUND;
}

// RGB rows, each pixel the mean of 4x4 samples (smooth edges at any size).
function draw(size) {
  const rows = Buffer.alloc(size * (3 * size + 1));
  for (let y = 0; y < size; y++) {
    rows[y * (3 * size + 1)] = 0; // PNG filter: none
    for (let x = 0; x < size; x++) {
      const sum = [0, 0, 0];
      for (let a = 0; a < 4; a++) {
        for (let b = 0; b < 4; b++) {
          const c = colourAt((x + (a + 0.5) / 4) / size, (y + (b + 0.5) / 4) / size);
          for (let k = 0; k < 3; k++) sum[k] += c[k];
        }
      }
      for (let k = 0; k < 3; k++) rows[y * (3 * size + 1) + 1 + 3 * x + k] = Math.round(sum[k] / 16);
    }
  }
  return rows;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// A PNG chunk: length, type, data, CRC of type and data.
function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function png(size) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, RGB, deflate, adaptive filters, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(draw(size), { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const dir = path.dirname(new URL(import.meta.url).pathname);
for (const size of [192, 512]) {
  const file = path.join(dir, `icon-${size}.png`);
  fs.writeFileSync(file, png(size));
  console.log(`${path.relative(process.cwd(), file)}: ${size}x${size}, ${fs.statSync(file).size} bytes`);
}
