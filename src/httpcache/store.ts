// The cache stores behind one small interface: the in-process L1 (memory.ts) and the shared L2
// (redis-store.ts) pass the same conformance suite (test/cache/store-conformance.ts).
import type { CacheEntry } from './entry.js'

export interface PurgeSelector { key?: string; prefix?: string; tag?: string }

export interface EntryStore {
  /** The entry stored under a variant key. */
  get (key: string): CacheEntry | undefined | Promise<CacheEntry | undefined>
  /** The Vary header names last seen for a base key (empty when the response had no Vary). */
  getVary (base: string): string[] | undefined | Promise<string[] | undefined>
  set (entry: CacheEntry, ttlMs: number): boolean | void | Promise<void>
  /** Remove every variant of a base key (unsafe-method invalidation). */
  deleteBase (base: string): number | Promise<number>
  purge (sel: PurgeSelector): number | Promise<number>
  stats (): { entries: number; bytes: number } | Promise<{ entries: number; bytes: number }>
}

/** Does a stored path match a purge selector? `key` is an exact path (and query); `prefix` a path prefix. */
export function matches (e: { path: string; tags: readonly string[] }, sel: PurgeSelector): boolean {
  if (sel.key !== undefined) return e.path === sel.key
  if (sel.prefix !== undefined) return e.path.startsWith(sel.prefix)
  if (sel.tag !== undefined) return e.tags.includes(sel.tag)
  return false
}
