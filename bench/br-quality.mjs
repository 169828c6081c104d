#!/usr/bin/env node
// Brotli quality for the copy stored with a cache entry (compression.storeBrQuality): bytes
// against encoding time, on the bench's bodies (a 100 KB catalogue JSON, a 1 KB text) and a
// 1 MB JSON. The stored copy is encoded once per entry, in the background on libuv's thread
// pool, so its cost is CPU per stored entry, never a response's latency.
//
//   node bench/br-quality.mjs [--repeat N]
import zlib from 'node:zlib'
import { HIT1K_BODY, HIT100K_JSON, catalogueJson } from './lib/bodies.mjs'

const repeat = Number(process.argv[process.argv.indexOf('--repeat') + 1]) || 5
const bodies = [
  ['1 KB text', HIT1K_BODY],
  ['100 KB JSON', HIT100K_JSON],
  ['1 MB JSON', catalogueJson(1024 * 1024)]
]
const windowBits = (n) => { let b = 10; while (b < 24 && (1 << b) - 16 < n) b++; return b }

console.log('| body | quality | bytes | vs q11 | encode ms (median of ' + repeat + ') |')
console.log('|---|---:|---:|---:|---:|')
for (const [name, body] of bodies) {
  const rows = []
  for (const q of [5, 9, 10, 11]) {
    const params = {
      [zlib.constants.BROTLI_PARAM_QUALITY]: q,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length,
      [zlib.constants.BROTLI_PARAM_LGWIN]: windowBits(body.length),
      [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_TEXT
    }
    const times = []
    let out
    for (let i = 0; i < repeat; i++) {
      const t = process.hrtime.bigint()
      out = zlib.brotliCompressSync(body, { params })
      times.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
    times.sort((a, b) => a - b)
    rows.push({ q, bytes: out.length, ms: times[times.length >> 1] })
  }
  const q11 = rows.find((r) => r.q === 11).bytes
  for (const r of rows) console.log(`| ${name} | ${r.q} | ${r.bytes} | ${(r.bytes / q11).toFixed(3)}x | ${r.ms.toFixed(2)} |`)
}
