// Cache-Control style directive lists (RFC 9111 §5.2): `a, b=1, c="x, y"` → Map.
// Names are case-insensitive (lower-cased); quoted values are unquoted.
export type Directives = Map<string, string | true>

const EMPTY: Directives = new Map()

export function parseDirectives (value: string | string[] | undefined): Directives {
  if (value === undefined) return EMPTY
  const s = Array.isArray(value) ? value.join(',') : value
  if (s.length === 0) return EMPTY
  const out: Directives = new Map()
  let i = 0
  const n = s.length
  while (i < n) {
    while (i < n && (s[i] === ',' || s[i] === ' ' || s[i] === '\t')) i++
    let j = i
    while (j < n && s[j] !== '=' && s[j] !== ',') j++
    const name = s.slice(i, j).trim().toLowerCase()
    if (j < n && s[j] === '=') {
      j++
      let v: string
      if (s[j] === '"') {
        let k = j + 1
        let buf = ''
        while (k < n && s[k] !== '"') { if (s[k] === '\\' && k + 1 < n) k++; buf += s[k]; k++ }
        v = buf
        j = k + 1
        while (j < n && s[j] !== ',') j++
      } else {
        let k = j
        while (k < n && s[k] !== ',') k++
        v = s.slice(j, k).trim()
        j = k
      }
      if (name && !out.has(name)) out.set(name, v)
    } else if (name && !out.has(name)) out.set(name, true)
    i = j + 1
  }
  return out
}

/** A delta-seconds directive value, or undefined when absent or malformed (RFC 9111 §1.2.2). */
export function seconds (d: Directives, name: string): number | undefined {
  const v = d.get(name)
  if (v === undefined || v === true) return undefined
  if (!/^\d+$/.test(v)) return undefined
  const n = Number(v)
  return n > 2147483648 ? 2147483648 : n
}

export function has (d: Directives, name: string): boolean {
  return d.has(name)
}

/** Parse an HTTP-date (IMF-fixdate and the two obsolete forms); NaN when invalid. */
export function httpDate (v: string | string[] | undefined): number {
  if (v === undefined) return NaN
  const s = Array.isArray(v) ? v[0] : v
  if (!/^[A-Za-z]{3,9}, ?\d|^[A-Za-z]{3} [A-Za-z]{3} /.test(s.trim())) return NaN
  return Date.parse(s)
}
