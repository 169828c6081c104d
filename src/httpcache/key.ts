// The cache key: method class, host, path and query (normalised per route), the route's extra
// key headers, then the Vary'd request headers. A Vary'd value is compared as sent, but for the
// optional whitespace around list items; only fields known to be case-insensitive are lower-cased
// (see CASE_INSENSITIVE), Accept-Language is sorted, and Accept-Encoding is reduced to the encoding
// Sluice would serve (RFC 9111 §4.1: normalise only where the field's semantics allow).
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

/**
 * Vary'd request fields whose values Sluice lower-cases before keying, each because its syntax is
 * case-insensitive where it is lower-cased (never inside a quoted string):
 * - accept: type, subtype and parameter names (RFC 9110 §8.3.1, §12.5.1), and the values of `q`
 *   (a weight) and `charset` (RFC 9110 §8.3.2); other parameter values are kept as sent;
 * - accept-charset: charset names (RFC 9110 §8.3.2, §12.5.2);
 * - accept-language: language ranges (RFC 4647 §2, RFC 5646 §2.1.1; RFC 9110 §12.5.4), also sorted;
 * - accept-encoding: content codings (RFC 9110 §8.4.1), reduced to the coding Sluice would serve.
 * Every other field (Cookie, Authorization, API keys, User-Agent, Origin, ...) keeps its case and
 * its inner whitespace: two users whose values differ only there must never share an entry.
 */
const CASE_INSENSITIVE = new Set(['accept', 'accept-charset', 'accept-language', 'accept-encoding'])

export function varyValue (name: string, reqHeaders: Headers): string {
  if (name === 'accept-encoding') return pickEncoding(headerText(reqHeaders['accept-encoding']) || undefined, CODINGS, CODINGS) ?? 'none'
  const raw = reqHeaders[name]
  if (raw === undefined) return ''
  const v = Array.isArray(raw) ? raw.join(',') : raw
  if (!CASE_INSENSITIVE.has(name)) {
    // As sent, but for the optional whitespace around list items (RFC 9110 §5.6.1); commas
    // inside quoted strings separate nothing. No whitespace: nothing to trim (the common case).
    return /[ \t]/.test(v) ? splitOutsideQuotes(v, ',').join(',') : v
  }
  // Accept-Language ranges carry their weights in q-values, so their order says nothing: sort them.
  if (name === 'accept-language') return listItems(v.toLowerCase()).sort().join(',')
  if (name === 'accept-charset') return listItems(v.toLowerCase()).join(',')
  return splitOutsideQuotes(v, ',').map(acceptItem).join(',')
}

/** One Accept item: the media range and parameter names lower case, values as sent (but q and charset). */
function acceptItem (item: string): string {
  const parts = splitOutsideQuotes(item, ';')
  let out = parts[0].toLowerCase()
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i]
    const eq = p.indexOf('=')
    if (eq === -1) { out += ';' + p.toLowerCase(); continue }
    const pname = p.slice(0, eq).trim().toLowerCase()
    const pvalue = p.slice(eq + 1).trim()
    out += ';' + pname + '=' + ((pname === 'q' || pname === 'charset') && !pvalue.startsWith('"') ? pvalue.toLowerCase() : pvalue)
  }
  return out
}

/** `v` split at `sep` outside quoted strings (RFC 9110 §5.6.4), each part without the OWS around it. */
function splitOutsideQuotes (v: string, sep: string): string[] {
  const out: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < v.length; i++) {
    const c = v[i]
    if (quoted && c === '\\') i++
    else if (c === '"') quoted = !quoted
    else if (c === sep && !quoted) { out.push(ows(v.slice(start, i))); start = i + 1 }
  }
  out.push(ows(v.slice(start)))
  return out
}

/** `s` without leading and trailing OWS (space and tab only: other bytes are part of the value). */
function ows (s: string): string {
  return s.replace(/^[ \t]+|[ \t]+$/g, '')
}

/** Items of a comma-separated value without the optional whitespace around them (RFC 9110 §5.6.1). */
function listItems (v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
}

/**
 * The key of a request's variant: the base key, then a line `name=value` per Vary'd field, or
 * just `name` for a field the request does not have: a request without the field matches only
 * another without it, never one that sends it empty (RFC 9111 §4.1), which an origin may answer
 * differently. (Accept-Encoding is always `name=value`: absent and empty are both keyed by the
 * coding Sluice serves, identity.) (Keys before the values kept their case were written
 * `name:value`: the new separator makes every such key, which may hold a response keyed by a
 * lower-cased value, unreachable, so an upgrade costs those variants one miss each and never
 * serves one to a request it was not keyed by.)
 */
export function variantKey (base: string, names: readonly string[], reqHeaders: Headers): string {
  if (names.length === 0) return base
  let k = base
  for (const n of names) {
    k += reqHeaders[n] === undefined && n !== 'accept-encoding' ? '\n' + n : '\n' + n + '=' + varyValue(n, reqHeaders)
  }
  return k
}
