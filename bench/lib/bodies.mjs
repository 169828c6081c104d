// The bytes every benchmark target serves: the origin, bare Fastify and the
// compression anchors import this module, so a body is identical everywhere.
// Deterministic (seeded), so figures and byte counts are comparable between runs.
import { createHash } from 'node:crypto'
import { brotliCompressSync, gzipSync, constants } from 'node:zlib'

function rng (seed) {
  // mulberry32: small, fast, deterministic
  return () => {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const WORDS = ('alpine amber anchor arctic atlas aurora basalt beacon birch breeze canyon cedar ' +
  'cobalt comet coral crest delta drift dune ember fern fjord flint glacier granite grove ' +
  'harbor hazel heron indigo iris jade juniper kelp lagoon larch lichen maple meadow mesa ' +
  'mist moss nectar nova oak onyx opal orchid pebble pine prairie quartz raven reef ridge ' +
  'river sage sierra slate spruce summit tide timber topaz tundra umber valley willow zephyr').split(' ')
const CATEGORIES = ['outdoor', 'kitchen', 'garden', 'books', 'audio', 'tools', 'toys', 'apparel']
const CURRENCIES = ['EUR', 'USD', 'GBP']

function words (r, n) {
  const out = []
  for (let i = 0; i < n; i++) out.push(WORDS[Math.floor(r() * WORDS.length)])
  return out.join(' ')
}

/** A product-catalogue page: what an API behind a cache typically returns. */
export function catalogueJson (targetBytes) {
  const r = rng(42)
  const items = []
  let size = 0
  for (let id = 1; size < targetBytes - 400; id++) {
    const item = {
      id,
      sku: `SKU-${(100000 + Math.floor(r() * 900000))}-${id}`,
      name: words(r, 3).replace(/\b\w/g, (c) => c.toUpperCase()),
      category: CATEGORIES[Math.floor(r() * CATEGORIES.length)],
      price: { amount: Math.round(r() * 50000) / 100, currency: CURRENCIES[Math.floor(r() * 3)] },
      inStock: r() > 0.2,
      stock: Math.floor(r() * 500),
      rating: Math.round(r() * 50) / 10,
      reviews: Math.floor(r() * 2000),
      tags: [words(r, 1), words(r, 1), words(r, 1)],
      description: words(r, 12 + Math.floor(r() * 18)),
      updatedAt: new Date(Date.UTC(2026, 0, 1) + Math.floor(r() * 3e10)).toISOString()
    }
    items.push(item)
    size += JSON.stringify(item).length + 1
  }
  const doc = { page: 1, pageSize: items.length, total: items.length * 37, items }
  let s = JSON.stringify(doc)
  // pad to the exact size with a trailing field, so "100 KB" means 102400 bytes
  const pad = targetBytes - s.length - ',"cursor":""'.length
  if (pad > 0) s = s.slice(0, -1) + `,"cursor":"${Buffer.from(words(r, pad)).toString('base64url').slice(0, pad)}"}`
  return Buffer.from(s)
}

function textBody (bytes) {
  const r = rng(7)
  let s = ''
  while (s.length < bytes) s += words(r, 10) + '\n'
  return Buffer.from(s.slice(0, bytes - 1) + '\n')
}

const etag = (buf) => '"' + createHash('sha1').update(buf).digest('base64url').slice(0, 27) + '"'

export const PASS_BODY = Buffer.from('pass-through: this response is not cacheable\n')
export const HIT1K_BODY = textBody(1024)
export const HIT100K_JSON = catalogueJson(102400)
export const HIT1K_ETAG = etag(HIT1K_BODY)
export const HIT100K_ETAG = etag(HIT100K_JSON)

let encoded
/**
 * Pre-compressed variants of the 100 KB JSON, for the bare-Fastify ceiling.
 * br at quality 11 and gzip at level 9: computed once, as a cache that stores
 * encoded variants would. (Computed lazily: the origin never needs them.)
 */
export function hit100kEncoded () {
  encoded ??= {
    br: brotliCompressSync(HIT100K_JSON, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT, [constants.BROTLI_PARAM_SIZE_HINT]: HIT100K_JSON.length }
    }),
    gzip: gzipSync(HIT100K_JSON, { level: 9 })
  }
  return encoded
}
