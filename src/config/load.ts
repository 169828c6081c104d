// Reads a config file: YAML with source positions → ${VAR} interpolation → defaults →
// strict validation against the one schema → semantic checks. Every problem names the
// file, line:column and key path, e.g. `sluice.yaml:12:7 routes[2].cache.defaultTtlSeconds: expected integer >= 0`.
import { readFileSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { readListenTls, type TlsMaterial } from '../edge/tls.js'
import { parseDocument, LineCounter, visit, isAlias, isMap, isSeq, isScalar, isPair, type Document, type Node as YamlNode, type YAMLMap } from 'yaml'
import { Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value'
import type { TSchema } from '@sinclair/typebox'
import { ConfigSchema, UpstreamSchema, type Config } from './schema.js'
import { checkConfig } from './check.js'

export interface ConfigIssue {
  file: string
  line: number
  col: number
  /** Key path, e.g. routes[2].cache.defaultTtlSeconds; '' for the whole file. */
  path: string
  message: string
}

export class ConfigError extends Error {
  readonly issues: ConfigIssue[]
  constructor (issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'))
    this.name = 'ConfigError'
    this.issues = issues
  }
}

export function formatIssue (i: ConfigIssue): string {
  // Line 0: an issue with the file as a whole that has no position in it (it cannot be read).
  if (i.line === 0 && i.path === '') return `${i.file}: ${i.message}`
  return `${i.file}:${i.line}:${i.col} ${i.path || '(file)'}: ${i.message}`
}

export interface LoadedConfig {
  config: Config
  /** Non-fatal findings (for example TLS verification turned off). */
  warnings: string[]
  file: string
  /** The config as written (after ${VAR} interpolation, before defaults), for merging route defaults. */
  raw: Record<string, unknown>
  /** Contents of each upstream's tls.caFile by upstream name, read here (pass to compile). */
  ca: Record<string, Buffer>
  /** listen.tls's files, read and checked here (pass to compile); null without listen.tls. */
  listenTls?: TlsMaterial | null
  /** The file's text as read (a cluster primary hands the text it validated to its workers). */
  text: string
}

type Segment = string | number

/** Key path segments → `routes[2].cache.ttl`. */
export function pathToString (segments: readonly Segment[]): string {
  let out = ''
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : (out ? '.' : '') + s
  return out
}

/** A YAML merge key (`<<`) as the parser gives it with `merge: true`: a scalar holding a symbol. */
function isMergeKey (key: unknown): boolean {
  return isScalar(key) && typeof key.value === 'symbol' && key.value.description === '<<'
}

/** A mapping key as a key path segment (`<<` for a merge key). */
function keyName (key: unknown): string {
  if (!isScalar(key)) return '?'
  return isMergeKey(key) ? '<<' : String(key.value)
}

/** The mappings a `<<` value merges, in order (earlier ones win); null when one is not a mapping. */
function mergeSources (doc: Document, value: unknown): YAMLMap[] | null {
  const one = isAlias(value) ? value.resolve(doc) : value
  const items = isSeq(one) ? one.items.map((it) => isAlias(it) ? it.resolve(doc) : it) : [one]
  return items.every((it) => isMap(it)) ? items as YAMLMap[] : null
}

class Locator {
  constructor (private readonly doc: Document, private readonly lc: LineCounter, private readonly file: string) {}

  /**
   * The entry of `map` for `key` as the loaded config sees it (mapEntries' order: a key written
   * in the mapping, else the first mapping merged by `<<` that has it), so a value that came
   * through a merge key points into the anchor where it is written.
   */
  private entry (map: YAMLMap, key: string): MapEntry | null {
    return mapEntries(this.doc, map).find((e) => e.name === key && isScalar(e.key)) ?? null
  }

  /**
   * Walk `segments` through the document, through aliases and merge keys: the deepest node
   * that exists and its position (the key itself for a map entry whose value is a mapping or a
   * list, else its value; `atKey`: the last key itself). `complete`: every segment was found.
   */
  private walk (segments: readonly Segment[], atKey: boolean): { node: unknown, pos: number, complete: boolean } {
    const resolve = (n: unknown) => isAlias(n) ? n.resolve(this.doc) : n
    let node: unknown = resolve(this.doc.contents)
    let pos = 0
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]
      if (isMap(node)) {
        const found = this.entry(node, String(seg))
        if (!found) return { node, pos, complete: false }
        pos = (found.key as YamlNode).range?.[0] ?? pos
        node = resolve(found.value)
        if (atKey && i === segments.length - 1) break
        if (node && (node as YamlNode).range && !isMap(node) && !isSeq(node)) pos = (node as YamlNode).range![0]
      } else if (isSeq(node) && typeof seg === 'number' && node.items[seg]) {
        node = resolve(node.items[seg])
        pos = (node as YamlNode | undefined)?.range?.[0] ?? pos
      } else return { node, pos, complete: false }
    }
    return { node, pos, complete: true }
  }

  /** The node the loaded value at `segments` came from (through aliases and merges), if any. */
  nodeAt (segments: readonly Segment[]): unknown {
    const { node, complete } = this.walk(segments, false)
    return complete ? node : undefined
  }

  issue (segments: readonly Segment[], message: string, atKey = false): ConfigIssue {
    const { line, col } = this.lc.linePos(this.walk(segments, atKey).pos)
    return { file: this.file, line, col, path: pathToString(segments), message }
  }
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}/g

/**
 * Replace ${VAR} and ${VAR:-default} in every string scalar; unset variables without a default
 * are errors, and so is a reference left unparsed (a nested ${A:-${B}}, a stray `}` or `${`).
 * Returns the scalars that became numbers or booleans, with their text: where the schema wants
 * a string there (a numeric password or token), the text is put back.
 */
function interpolate (doc: Document, env: NodeJS.ProcessEnv, onError: (node: YamlNode, msg: string) => void, written: Map<YamlNode, string>, unused: (node: YamlNode) => boolean): Map<YamlNode, string> {
  const typed = new Map<YamlNode, string>()
  visit(doc, {
    Scalar (_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return
      // A value under a top-level x- key that the config never loads (no alias or merge key
      // reaches it) is dropped unread, so its references are not resolved: an unset variable
      // there is not an error (docker-compose files keep such blocks per environment).
      if (underExtension(path) && unused(node)) return
      written.set(node, node.value)
      const out = node.value.replace(ENV_REF, (_m, name: string, hasDefault: string | undefined, def: string | undefined) => {
        const v = env[name]
        if (v !== undefined && v !== '') return v
        if (hasDefault !== undefined) {
          if (def !== undefined && def.includes('${')) onError(node, `\${${name}:-...}: a default cannot hold another \${...} reference`)
          return def ?? ''
        }
        onError(node, `environment variable ${name} is ${v === '' ? 'empty' : 'not set'} (write \${${name}:-default} to give a default)`)
        return ''
      })
      const left = node.value.replace(ENV_REF, '')
      if (left.includes('${')) { onError(node, `unparsed \${ in ${JSON.stringify(node.value)}: a reference is \${NAME} or \${NAME:-default}`); return }
      // An unquoted scalar that becomes a number or a boolean takes that type, as YAML would have.
      if (node.type === 'PLAIN') {
        if (/^-?\d+(\.\d+)?$/.test(out)) { node.value = Number(out); typed.set(node, out); return }
        if (out === 'true' || out === 'false') { node.value = out === 'true'; typed.set(node, out); return }
      }
      node.value = out
    }
  })
  return typed
}

/**
 * A top-level key that starts with `x-` is the user's own (as in docker-compose): a place for
 * anchors that other keys merge. It is not config: dropped before validation.
 */
const isExtensionKey = (name: string): boolean => name.startsWith('x-')

/** Whether a node visit()ed at `path` lies under a top-level `x-` key. */
function underExtension (path: readonly unknown[]): boolean {
  // path: the document, its root mapping, the top-level pair, then the nodes below it.
  const top = path[2]
  return isPair(top) && isExtensionKey(keyName(top.key))
}

/**
 * A union (a target as a URL or as { url, weight }; workers as `auto` or a number) fails as a
 * whole. When a branch got past the value itself (the value is a mapping, and a key inside it
 * is wrong), that branch's errors name the key; otherwise the union's own error lists the
 * branches (describe).
 */
function unionErrors (e: ValueError): ValueError[] {
  if (e.type !== ValueErrorType.Union) return [e]
  const subs = (e.errors ?? []).flatMap((it) => [...it])
  // A key with a default is not missing (defaults are filled in only once a branch is chosen).
  const deeper = subs.filter((s) => s.path.length > e.path.length && !(s.value === undefined && 'default' in s.schema))
  return deeper.length ? deeper.flatMap(unionErrors) : [e]
}

/** A union branch in words: "auto", integer >= 1, a mapping. */
function branchName (s: TSchema & Record<string, unknown>): string {
  if ('const' in s) return JSON.stringify(s.const)
  if (s.type === 'integer' || s.type === 'number') {
    const bound = typeof s.minimum === 'number' ? ` >= ${s.minimum}` : typeof s.exclusiveMinimum === 'number' ? ` > ${s.exclusiveMinimum}` : ''
    return `${s.type}${bound}`
  }
  if (s.type === 'object') return 'a mapping'
  if (s.type === 'array') return 'a list'
  return typeof s.type === 'string' ? s.type : 'another value'
}

/** Edit distance (insertions, deletions, substitutions), for "did you mean". */
function distance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]
}

/** The key of the mapping closest to a misspelt one (case ignored), if one is close enough. */
export function closestKey (key: string, known: readonly string[]): string | null {
  let best: string | null = null
  let bestD = Infinity
  for (const k of known) {
    const d = distance(key.toLowerCase(), k.toLowerCase())
    if (d < bestD) { best = k; bestD = d }
  }
  return best !== null && bestD <= Math.max(1, Math.floor(Math.min(key.length, best.length) / 3)) ? best : null
}

function describe (e: ValueError): string {
  const s = e.schema as TSchema & Record<string, unknown>
  const type = s.type === 'integer' ? 'integer' : s.type === 'number' ? 'number' : s.type
  switch (e.message) {
    case 'Unexpected property': {
      const key = e.path.slice(e.path.lastIndexOf('/') + 1).replace(/~1/g, '/').replace(/~0/g, '~')
      const near = s.properties !== null && typeof s.properties === 'object' ? closestKey(key, Object.keys(s.properties)) : null
      return near === null ? 'unknown key' : `unknown key (did you mean ${near}?)`
    }
    case 'Expected required property': return 'required key is missing'
  }
  // Bounds of a list, a string or a mapping (their messages start with "Expected" too, and read
  // "expected a list, got a list" as the type's would).
  const n = (k: string) => s[k] as number
  const count = (c: number, one: string, many: string) => `${c} ${c === 1 ? one : many}`
  switch (e.type) {
    case ValueErrorType.ArrayMinItems: return `expected at least ${count(n('minItems'), 'item', 'items')}, got ${Array.isArray(e.value) ? e.value.length : 0}`
    case ValueErrorType.ArrayMaxItems: return `expected at most ${count(n('maxItems'), 'item', 'items')}, got ${Array.isArray(e.value) ? e.value.length : 0}`
    case ValueErrorType.ArrayUniqueItems: {
      // By position, not value: a list item may be a URL with a password.
      const items = Array.isArray(e.value) ? e.value.map((v) => JSON.stringify(v)) : []
      const dup = items.findIndex((v, i) => items.indexOf(v) !== i)
      return dup === -1 ? 'expected unique items' : `expected unique items: [${dup}] repeats [${items.indexOf(items[dup])}]`
    }
    case ValueErrorType.StringMinLength: return n('minLength') === 1 ? 'expected a non-empty string' : `expected a string of at least ${count(n('minLength'), 'character', 'characters')}`
    case ValueErrorType.StringMaxLength: return `expected a string of at most ${count(n('maxLength'), 'character', 'characters')}`
    case ValueErrorType.ObjectMinProperties: return `expected at least ${count(n('minProperties'), 'key', 'keys')}`
    case ValueErrorType.ObjectMaxProperties: return `expected at most ${count(n('maxProperties'), 'key', 'keys')}`
  }
  if (Array.isArray(s.anyOf) && s.anyOf.every((x: TSchema) => 'const' in x)) {
    return `expected one of ${s.anyOf.map((x: TSchema) => JSON.stringify(x.const)).join(', ')}`
  }
  if (Array.isArray(s.anyOf)) {
    const got = Array.isArray(e.value) ? 'a list' : e.value === null ? 'null' : typeof e.value === 'object' ? 'a mapping' : JSON.stringify(e.value)
    return `expected ${s.anyOf.map((x: TSchema) => branchName(x as TSchema & Record<string, unknown>)).join(' or ')}, got ${got}`
  }
  if (type === 'integer' || type === 'number') {
    if (typeof e.value === 'number') {
      if (typeof s.minimum === 'number' && e.value < s.minimum) return `expected ${type} >= ${s.minimum}`
      if (typeof s.exclusiveMinimum === 'number' && e.value <= s.exclusiveMinimum) return `expected ${type} > ${s.exclusiveMinimum}`
      if (typeof s.maximum === 'number' && e.value > s.maximum) return `expected ${type} <= ${s.maximum}`
    }
    const bound = typeof s.minimum === 'number' ? ` >= ${s.minimum}` : typeof s.exclusiveMinimum === 'number' ? ` > ${s.exclusiveMinimum}` : ''
    return `expected ${type}${bound}, got ${JSON.stringify(e.value)}`
  }
  if (type === 'string' && typeof s.pattern === 'string' && typeof e.value === 'string') return `${JSON.stringify(e.value)} does not match ${s.pattern}`
  if (type && typeof type === 'string') {
    const got = Array.isArray(e.value) ? 'a list' : e.value === null ? 'null' : type === 'boolean' && typeof e.value === 'string' && e.value.length <= 40 ? JSON.stringify(e.value) : typeof e.value
    if (e.message.startsWith('Expected')) return `expected ${type === 'array' ? 'a list' : type === 'object' ? 'a mapping' : type}, got ${got}`
  }
  return e.message.charAt(0).toLowerCase() + e.message.slice(1)
}

function setAt (root: unknown, segs: readonly Segment[], value: unknown): void {
  let cur = root as Record<string | number, unknown>
  for (let i = 0; i < segs.length - 1; i++) cur = cur[segs[i]] as Record<string | number, unknown>
  if (cur !== null && typeof cur === 'object' && segs.length > 0) cur[segs[segs.length - 1]] = value
}

function toSegments (pointer: string, root: unknown): Segment[] {
  const out: Segment[] = []
  let cur: unknown = root
  for (const raw of pointer.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    const seg: Segment = Array.isArray(cur) && /^\d+$/.test(part) ? Number(part) : part
    out.push(seg)
    cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[part] : undefined
  }
  return out
}

/** Apply schema defaults, including inside the upstream records (TypeBox does not descend into Record). */
export function withDefaults (raw: Record<string, unknown>): Record<string, unknown> {
  const v = Value.Default(ConfigSchema, structuredClone(raw)) as Record<string, unknown>
  const ups = v.upstreams
  if (ups && typeof ups === 'object' && !Array.isArray(ups)) {
    for (const [k, u] of Object.entries(ups)) (ups as Record<string, unknown>)[k] = Value.Default(UpstreamSchema, u)
  }
  return v
}

/** Parse and validate config text. Throws ConfigError listing every problem. */
export function parseConfig (text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const lc = new LineCounter()
  // merge: YAML 1.1 merge keys (`<<: *defaults`), which docker-compose and Kubernetes users write.
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false, merge: true })
  const loc = new Locator(doc, lc, file)
  const issues: ConfigIssue[] = []
  for (const err of doc.errors) {
    const { line, col } = lc.linePos(err.pos[0])
    // A duplicate key names its path. Other syntax errors do not: in a broken document a value
    // (a token, a password) can parse as a key, and the path would echo it.
    issues.push({ file, line, col, path: err.code === 'DUPLICATE_KEY' ? pathAt(doc, err.pos[0]) : '', message: `YAML: ${err.message.split('\n')[0]}` })
  }
  if (issues.length) throw new ConfigError(issues)
  /** Each scalar that held a ${VAR} reference, with its text as written. */
  const written = new Map<YamlNode, string>()
  // Where each scalar is loaded (usePaths), walked once when first needed; null past its bound.
  let walked: Map<unknown, Segment[][]> | null | undefined
  const uses = (): Map<unknown, Segment[][]> | null => walked === undefined ? (walked = usePaths(doc)) : walked
  const typed = interpolate(doc, env, (node, message) => {
    const { line, col } = lc.linePos(node.range?.[0] ?? 0)
    // A value in an anchor: the key path of each place it is loaded (as for a value the
    // schema refuses), at the line where it is written. Else, or past the walk's bound, where
    // it is written.
    const at = uses()?.get(node) ?? []
    if (at.length === 0) issues.push({ file, line, col, path: nodePath(doc, node), message })
    for (const segs of at) issues.push({ file, line, col, path: pathToString(segs), message })
  }, written, (node) => uses()?.has(node) === false)
  if (issues.length) throw new ConfigError(issues)
  // Aliases and merge keys the parser accepts but toJS would refuse with no position.
  checkAliases(doc, (node, message) => {
    const { line, col } = lc.linePos(node.range?.[0] ?? 0)
    issues.push({ file, line, col, path: nodePath(doc, node), message: `YAML: ${message}` })
  })
  if (issues.length) throw new ConfigError(issues)
  let raw: unknown
  try {
    raw = doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    // e.g. an alias bomb past maxAliasCount
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: `YAML: ${(err as Error).message}` }])
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: 'the file must be a YAML mapping (listen, upstreams, routes, ...)' }])
  }
  // Top-level keys that start with x- are the user's own (as in docker-compose): a place for
  // anchors that other keys merge (`x-upstream-defaults: &up { timeoutMs: 5000 }`). Not config.
  for (const k of Object.keys(raw)) if (isExtensionKey(k)) delete (raw as Record<string, unknown>)[k]
  const defaulted = withDefaults(raw as Record<string, unknown>)
  // A ${VAR} that made a number or a boolean where the schema wants a string (a numeric
  // password, a token of digits) is the variable's text.
  // The node found by the error's key path, through aliases and merge keys (an anchor's scalar
  // is one node wherever it is used).
  if (typed.size > 0) {
    for (const e of Value.Errors(ConfigSchema, defaulted)) {
      if ((e.schema as { type?: unknown }).type !== 'string') continue
      const segments = toSegments(e.path, defaulted)
      const text = typed.get(loc.nodeAt(segments) as YamlNode)
      if (text !== undefined) setAt(defaulted, segments, text)
    }
  }
  const seen = new Set<string>()
  for (const top of Value.Errors(ConfigSchema, defaulted)) {
    for (const e of unionErrors(top)) {
      if (seen.has(e.path)) continue // one message per key: the first is the most precise
      seen.add(e.path)
      // A value that came from ${VAR}: the message says so (the file shows the reference, not the value).
      const unknownKey = e.type === ValueErrorType.ObjectAdditionalProperties
      const ref = unknownKey ? undefined : written.get(loc.nodeAt(toSegments(e.path, defaulted)) as YamlNode)
      const message = describe(e) + (ref === undefined ? '' : ` (from ${ref})`)
      issues.push(loc.issue(toSegments(e.path, defaulted), message, unknownKey))
    }
  }
  if (issues.length) throw new ConfigError(issues)
  const config = defaulted as unknown as Config
  const warnings: string[] = []
  for (const { segments, message, warning } of checkConfig(config, raw as Record<string, unknown>)) {
    if (warning) warnings.push(`${file}: ${pathToString(segments)}: ${message}`)
    else issues.push(loc.issue(segments, message))
  }
  if (issues.length) throw new ConfigError(issues)
  const ca = readUpstreamCas(config, (segments, message) => issues.push(loc.issue(segments, message)))
  // The proxy port's certificate pair: read and checked now, so a bad pair fails the load (or the reload) with its key.
  const lt = config.listen.tls
  const listenTls = lt
    ? readListenTls(lt, (key, message) => issues.push(loc.issue(['listen', 'tls', key], message)), (key, message) => warnings.push(`${file}: listen.tls.${key}: ${message}`))
    : null
  if (issues.length) throw new ConfigError(issues)
  return { config, warnings, file, raw: raw as Record<string, unknown>, ca, listenTls, text }
}

/**
 * Read every upstream's tls.caFile now, so a missing or unreadable file is a config error
 * (with its line and key path) at load and at reload, never a failure while pools are built.
 */
function readUpstreamCas (config: Config, onError: (segments: Segment[], message: string) => void): Record<string, Buffer> {
  const out: Record<string, Buffer> = {}
  for (const [name, up] of Object.entries(config.upstreams)) {
    const caFile = up.tls.caFile
    if (!caFile) continue
    const at: Segment[] = ['upstreams', name, 'tls', 'caFile']
    let bytes: Buffer
    try {
      bytes = readFileSync(caFile)
    } catch (err) {
      onError(at, `cannot read the CA file: ${(err as Error).message}`)
      continue
    }
    if (!bytes.includes('-----BEGIN CERTIFICATE-----')) { onError(at, `no PEM certificate in ${JSON.stringify(caFile)}`); continue }
    try {
      createSecureContext({ ca: bytes })
    } catch (err) {
      onError(at, `not a usable PEM CA file: ${(err as Error).message}`)
      continue
    }
    out[name] = bytes
  }
  return out
}

/**
 * Report each alias to an anchor that does not exist (or comes after it), and each merge key
 * whose value is not a mapping, an alias of one, or a list of those, at its own position.
 */
function checkAliases (doc: Document, onError: (node: YamlNode, message: string) => void): void {
  visit(doc, {
    Alias (_key, node) {
      if (node.resolve(doc) === undefined) onError(node, `alias *${node.source} has no anchor &${node.source} before it`)
    },
    Pair (_key, pair) {
      if (!isMergeKey(pair.key)) return
      const value = pair.value as YamlNode | null
      const unresolved = (n: unknown) => isAlias(n) && n.resolve(doc) === undefined // reported as an alias
      if (unresolved(value) || (isSeq(value) && value.items.some(unresolved))) return
      if (mergeSources(doc, value) === null) onError(value ?? pair.key as YamlNode, '<< merges a mapping, an alias of one, or a list of those')
    }
  })
}

/** The key path of the node at a text offset (a duplicate key names itself), as far as the document parsed. */
function pathAt (doc: Document, offset: number): string {
  const segs: Segment[] = []
  const within = (n: unknown) => { const r = (n as YamlNode | null)?.range; return r !== undefined && r !== null && offset >= r[0] && offset < Math.max(r[1], r[0] + 1) }
  let node: unknown = doc.contents
  for (let depth = 0; depth < 64 && node; depth++) {
    let next: unknown = null
    if (isMap(node)) {
      for (const p of node.items) {
        if (!isPair(p)) continue
        const name = keyName(p.key)
        if (within(p.key)) { segs.push(name); return pathToString(segs) }
        if (within(p.value)) { segs.push(name); next = p.value; break }
      }
    } else if (isSeq(node)) {
      for (let i = 0; i < node.items.length; i++) if (within(node.items[i])) { segs.push(i); next = node.items[i]; break }
    }
    node = next
  }
  return pathToString(segs)
}

/** How many nodes usePaths() visits at most (aliases are followed, so a document can expand). */
const USE_WALK_MAX = 20000

/**
 * Each scalar the loaded config holds, with the key paths it is loaded at: through aliases and
 * merge keys (a key written in the mapping wins over a merged one, an earlier merged mapping
 * over a later one), leaving out top-level `x-` keys. null past USE_WALK_MAX nodes.
 */
function usePaths (doc: Document): Map<unknown, Segment[][]> | null {
  const out = new Map<unknown, Segment[][]>()
  let visited = 0
  const walk = (node: unknown, path: Segment[], depth: number): boolean => {
    if (++visited > USE_WALK_MAX || depth > 64) return false
    if (isAlias(node)) return walk(node.resolve(doc), path, depth + 1)
    if (isScalar(node)) {
      const list = out.get(node)
      if (list === undefined) out.set(node, [path]); else list.push(path)
      return true
    }
    if (isSeq(node)) {
      for (let i = 0; i < node.items.length; i++) if (!walk(node.items[i], [...path, i], depth + 1)) return false
      return true
    }
    if (!isMap(node)) return true
    const seen = new Set<string>()
    for (const { name, value } of mapEntries(doc, node)) {
      if (seen.has(name)) continue
      seen.add(name)
      if (depth === 0 && isExtensionKey(name)) continue
      if (!walk(value, [...path, name], depth + 1)) return false
    }
    return true
  }
  return walk(doc.contents, [], 0) ? out : null
}

/** One key of a mapping as the loaded config sees it: its name (keyName), the key node, its value. */
interface MapEntry { name: string, key: unknown, value: unknown }

/**
 * A mapping's entries in the order that decides (the first of a name wins): its own keys, then
 * each mapping `<<` merges, in order, with what those merge (16 merges deep at most).
 */
function mapEntries (doc: Document, map: YAMLMap, depth = 0): MapEntry[] {
  const own: MapEntry[] = []
  const merged: MapEntry[] = []
  for (const p of map.items) {
    if (!isPair(p)) continue
    if (!isMergeKey(p.key)) { own.push({ name: keyName(p.key), key: p.key, value: p.value }); continue }
    if (depth > 16) continue
    for (const src of mergeSources(doc, p.value) ?? []) merged.push(...mapEntries(doc, src, depth + 1))
  }
  return [...own, ...merged]
}

function nodePath (doc: Document, target: YamlNode): string {
  return pathToString(nodeSegments(doc, target))
}

function nodeSegments (doc: Document, target: YamlNode): Segment[] {
  const segs: Segment[] = []
  const walk = (node: unknown, path: Segment[]): boolean => {
    if (node === target) { segs.push(...path); return true }
    if (isMap(node)) {
      for (const p of node.items) {
        if (isPair(p) && walk(p.value, [...path, keyName(p.key)])) return true
      }
    } else if (isSeq(node)) {
      for (let i = 0; i < node.items.length; i++) if (walk(node.items[i], [...path, i])) return true
    }
    return false
  }
  walk(doc.contents, [])
  return segs
}

export function loadConfigFile (file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError([{ file, line: 0, col: 0, path: '', message: `cannot read the config file: ${(err as Error).message}` }])
  }
  return parseConfig(text, file, env)
}
