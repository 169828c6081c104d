// Instructions per request by function, JavaScript included: callgrind names the C++ and the
// builtins of a Node process, but its JIT-compiled JavaScript shows as bare addresses. Run with
// `node --perf-basic-prof`, V8 writes /tmp/perf-PID.map (address, size, name of each compiled
// function); this maps callgrind's addresses through it. Used by `bench/instr.mjs --by-function`.
import { readFileSync, existsSync } from 'node:fs'

/**
 * Self cost per function (divided by `requests`), from a callgrind file and the process's perf
 * map: instructions, or the sum of other events the file holds (`['DLmr', 'DLmw']`: last-level
 * data misses, with --cache-sim).
 */
export function byFunction (cgFile, requests, events = ['Ir']) {
  const text = readFileSync(cgFile, 'utf8')
  const pid = text.match(/^pid: (\d+)/m)?.[1]
  const names0 = (text.match(/^events: (.*)$/m)?.[1] ?? 'Ir').trim().split(' ')
  const cols = events.map((e) => names0.indexOf(e)).filter((i) => i >= 0)
  const mapFile = `/tmp/perf-${pid}.map`
  const ranges = []
  if (existsSync(mapFile)) {
    for (const l of readFileSync(mapFile, 'utf8').split('\n')) {
      const m = l.match(/^([0-9a-f]+) ([0-9a-f]+) (.*)$/)
      if (m) ranges.push([parseInt(m[1], 16), parseInt(m[2], 16), m[3]])
    }
    ranges.sort((a, b) => a[0] - b[0])
  }
  const lookup = (addr) => {
    let lo = 0; let hi = ranges.length - 1; let best = -1
    while (lo <= hi) { const mid = (lo + hi) >> 1; if (ranges[mid][0] <= addr) { best = mid; lo = mid + 1 } else hi = mid - 1 }
    return best >= 0 && addr < ranges[best][0] + ranges[best][1] ? ranges[best][2] : null
  }
  // callgrind's name compression: "(id) name" the first time, "(id)" after.
  const names = new Map()
  const nameOf = (s) => { const m = s.match(/^\((\d+)\)(?: (.*))?$/); if (!m) return s; if (m[2] !== undefined) names.set(m[1], m[2]); return names.get(m[1]) }
  const self = new Map()
  let fn = null; let afterCalls = false
  for (const l of text.split('\n')) {
    if (l.startsWith('fn=')) { fn = nameOf(l.slice(3)); continue }
    if (/^c?(fn|ob|fl|fi|fe)=/.test(l)) { nameOf(l.slice(l.indexOf('=') + 1)); continue }
    if (l.startsWith('calls=')) { afterCalls = true; continue }
    // A cost line: a position, then one number per event (trailing zeros may be left out).
    const m = l.match(/^(?:[+-]?\d+|\*) ([\d ]+)$/)
    if (!m || fn === null) continue
    if (afterCalls) { afterCalls = false; continue } // a call's inclusive cost, not this function's own
    const addr = fn.match(/^0x([0-9a-f]+)$/)
    const name = addr ? (lookup(parseInt(addr[1], 16)) ?? 'JIT code (unnamed)') : fn
    const v = m[1].split(' ')
    let cost = 0
    for (const c of cols) cost += Number(v[c] ?? 0)
    self.set(name, (self.get(name) ?? 0) + cost)
  }
  return [...self].map(([name, ir]) => ({ name, per: ir / requests })).sort((a, b) => b.per - a.per)
}
