// The cache key: method class, host, path and query (normalised per route), the route's extra
// key headers, then the Vary'd request headers (normalised: whitespace around list items, case,
// Accept-Language order, and Accept-Encoding reduced to the encoding Sluice would serve).
import { NO_STRINGS } from './entry.js'
import type { Headers } from '../types.js'
import { pickEncoding } from '../compress/negotiate.js'

export interface KeyOptions {
  sortQuery: boolean
  ignoreParams: readonly string[]
  headers: readonly string[]
}

const compiled = new WeakMap<KeyOptions, RegExp | null>()
function ignoreMatcher (o: KeyOptions): RegExp | null {
  let r = compiled.get(o)
  if (r === undefined) {
    r = o.ignoreParams.length === 0
      ? null
      : new RegExp('^(' + o.ignoreParams.map((p) => p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')).join('|') + ')$')
    compiled.set(o, r)
  }
  return r
}

/** Path and query as they go into the key. Unchanged (no allocation) unless the route asks. */
export function keyPath (url: string, o: KeyOptions): string {
  const q = url.indexOf('?')
  if (q === -1 || (!o.sortQuery && o.ignoreParams.length === 0)) return url
  const ignore = ignoreMatcher(o)
  let params = url.slice(q + 1).split('&').filter((p) => p.length > 0)
  if (ignore) params = params.filter((p) => !ignore.test(decodeURIComponentSafe(p.split('=')[0])))
  if (o.sortQuery) params.sort()
  return params.length ? url.slice(0, q) + '?' + params.join('&') : url.slice(0, q)
}

function decodeURIComponentSafe (s: string): string {
  try { return decodeURIComponent(s) } catch { return s }
}

function headerText (v: string | string[] | undefined): string {
  if (v === undefined) return ''
  return (Array.isArray(v) ? v.join(',') : v).replace(/\s+/g, ' ').trim()
}

export function baseKey (method: string, host: string, path: string, reqHeaders: Headers, o: KeyOptions): string {
  let k = (method === 'GET' || method === 'HEAD' ? 'G' : method) + '|' + host.toLowerCase() + '|' + path
  for (const h of o.headers) k += '|' + h + '=' + headerText(reqHeaders[h])
  return k
}

/**
 * Where the partial entry (a stored 206, partial.ts) of a variant key is kept: the key, a
 * newline and `206`. A newline is in no path, host or header value, so no request's key names it.
 */
const PART = '\n206'
export function partialKey (key: string): string {
  return key + PART
}

/** The variant key whose part is stored under `partKey` (partialKey's inverse). */
export function wholeKey (partKey: string): string {
  return partKey.endsWith(PART) ? partKey.slice(0, -PART.length) : partKey
}

/** Vary header names of a response, lower case, sorted, without duplicates. */
export function varyNames (vary: string | string[] | undefined): string[] {
  if (vary === undefined) return NO_STRINGS
  const names = new Set<string>()
  for (const n of (Array.isArray(vary) ? vary.join(',') : vary).split(',')) {
    const t = n.trim().toLowerCase()
    if (t) names.add(t)
  }
  return [...names].sort()
}

/** What Accept-Encoding is keyed by: the coding the client would get of those Sluice stores. */
const CODINGS = ['br', 'gzip', 'identity']

export function varyValue (name: string, reqHeaders: Headers): string {
  if (name === 'accept-encoding') return pickEncoding(headerText(reqHeaders['accept-encoding']) || undefined, CODINGS, CODINGS) ?? 'none'
  const v = headerText(reqHeaders[name]).toLowerCase()
  // Accept-Language ranges carry their weights in q-values, so their order says nothing: sort them.
  if (name === 'accept-language') return listItems(v).sort().join(',')
  return v.includes(' ') ? listItems(v).join(',') : v
}

/** Items of a comma-separated value without the optional whitespace around them (RFC 9110 §5.6.1). */
function listItems (v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
}

export function variantKey (base: string, names: readonly string[], reqHeaders: Headers): string {
  if (names.length === 0) return base
  let k = base
  for (const n of names) k += '\n' + n + ':' + varyValue(n, reqHeaders)
  return k
}
