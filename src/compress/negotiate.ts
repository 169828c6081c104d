// Accept-Encoding negotiation (RFC 9110 §12.5.3), memoised per header value: it runs on every
// request of a compressing route and on every cache hit, and clients send few distinct values.
//
// Why not @fastify/accept-negotiator (2.1.2): it serves a coding the client refused when the
// header also has `*` ("br;q=0, *" gives br, which that client cannot decode), it compares
// codings case-sensitively ("GZIP" gives nothing), it does not know x-gzip, and parameters
// other than q corrupt the q-value it reads. The grammar is small, so it is parsed here.

export type Coding = 'br' | 'gzip' | 'deflate' | 'identity'

/** q-values of the codings Sluice can produce, -1 where the header does not name them. */
interface Prefs { br: number; gzip: number; deflate: number; identity: number; star: number }

const MEMO_MAX = 512
const memo = new Map<string, Prefs>()

/** Exposed for tests: how many distinct header values are remembered now. */
export function memoSize (): number { return memo.size }

function parse (header: string): Prefs {
  const p: Prefs = { br: -1, gzip: -1, deflate: -1, identity: -1, star: -1 }
  for (const element of header.split(',')) {
    const parts = element.split(';')
    let coding = parts[0]!.trim().toLowerCase()
    if (coding === '') continue
    if (coding === 'x-gzip') coding = 'gzip' // RFC 9110 §8.4.1.3
    let q = 1
    for (let i = 1; i < parts.length; i++) {
      const param = parts[i]!.trim()
      if (param.length > 1 && (param[0] === 'q' || param[0] === 'Q') && param.slice(1).trimStart().startsWith('=')) {
        const v = param.slice(param.indexOf('=') + 1).trim()
        // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ); anything else is unusable.
        q = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(v) ? Number(v) : -2
      }
    }
    if (q === -2) continue
    const key = coding === '*' ? 'star' : coding
    // The first mention of a coding counts; codings Sluice never produces are irrelevant.
    if ((key === 'br' || key === 'gzip' || key === 'deflate' || key === 'identity' || key === 'star') && p[key] === -1) p[key] = q
  }
  return p
}

function prefsOf (header: string): Prefs {
  let p = memo.get(header)
  if (p === undefined) {
    p = parse(header)
    // Bounded: a client sending endless distinct values only costs itself a parse.
    if (memo.size >= MEMO_MAX) memo.delete(memo.keys().next().value!)
    memo.set(header, p)
  }
  return p
}

/** The q-value a coding gets: named, else through `*`; identity is acceptable unless excluded. */
function qOf (p: Prefs, c: Coding): number {
  const named = p[c]
  if (named !== -1) return named
  if (p.star !== -1) return p.star
  // Unnamed identity stays acceptable, below any coding the client named (§12.5.3).
  return c === 'identity' ? 0.0001 : 0
}

/**
 * The coding to send: the highest q among `order` (the route's encodings, in its order of
 * preference) that are `available`, then identity when available. Ties go to the earlier
 * one in `order`, and identity comes last, so "gzip, br" gives br on a [br, gzip] route.
 * - No header: identity (a client that says nothing may not decode anything); when identity
 *   is not available, the first available coding of `order` (RFC 9110 allows any coding).
 * - An empty header: identity only.
 * - null: nothing available is acceptable (e.g. "identity;q=0" and no match).
 */
export function pickEncoding (acceptEncoding: string | undefined, available: readonly string[], order: readonly string[]): Coding | null {
  const identityOk = available.includes('identity')
  if (acceptEncoding === undefined) {
    if (identityOk) return 'identity'
    for (const c of order) if (available.includes(c)) return c as Coding
    return null
  }
  const p = prefsOf(acceptEncoding)
  let best: Coding | null = null
  let bestQ = 0
  for (const c of order) {
    if ((c !== 'br' && c !== 'gzip' && c !== 'deflate') || !available.includes(c)) continue
    const q = qOf(p, c)
    if (q > bestQ) { best = c; bestQ = q }
  }
  if (identityOk && qOf(p, 'identity') > bestQ) best = 'identity'
  return best
}
