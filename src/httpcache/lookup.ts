// Finding the stored entry for a request: its base key's Vary names, then the variant, in L1
// and then L2 (an L2 hit is kept in L1, unless a purge naming it ran meanwhile). The hot path
// asks L1 only, synchronously.
import type { Headers } from '../types.js'
import type { CacheEntry } from './entry.js'
import { variantKey } from './key.js'
import type { MemoryStore } from './memory.js'
import type { CacheCore } from './core.js'

/** The L1 entry of this request's variant, or undefined (no Redis, no await). */
export function lookupL1 (l1: MemoryStore, base: string, rh: Headers): CacheEntry | undefined {
  const names = l1.getVary(base)
  return names === undefined ? undefined : l1.get(variantKey(base, names, rh))
}

/** L1, then L2: the entry (if any), the variant key this request maps to, and whether the entry came from L2. */
export async function lookup (core: CacheCore, base: string, rh: Headers): Promise<{ entry: CacheEntry | undefined; key: string; fromL2: boolean }> {
  const { l1, l2 } = core
  let names = l1.getVary(base)
  let e = names !== undefined ? l1.get(variantKey(base, names, rh)) : undefined
  let fromL2 = false
  if (e === undefined && l2 !== null) {
    // Kept in L1 unless a purge naming it ran meanwhile (core.readL2).
    e = await core.readL2(async () => {
      if (names !== undefined) return await l2.get(variantKey(base, names, rh))
      // Ask for the Vary record and the no-Vary entry together: one round trip in the common case.
      const [v, plain] = await Promise.all([l2.getVary(base), l2.get(base)])
      names = v
      if (names === undefined) return undefined
      return names.length === 0 ? plain : await l2.get(variantKey(base, names, rh))
    })
    fromL2 = e !== undefined
  }
  return { entry: e, key: variantKey(base, names ?? [], rh), fromL2 }
}
