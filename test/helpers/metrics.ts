// Test helper: read samples from Prometheus text exposition (the admin /metrics answer).
//
// Matching rule (one rule for every test): a sample matches when its metric name is exactly
// `name` and its label set CONTAINS every given label with exactly the given value (a label
// subset; `{}` matches every series of the name). The values of all matching samples are
// summed, so a partial label set adds up its series; no match gives 0.
import { request } from 'undici'

export interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parse exposition text into samples (comments and blank lines skipped; escapes in label values decoded; NaN/Inf in any case; a trailing timestamp ignored). A line that is not a sample throws. */
export function parseSamples (text: string): Sample[] {
  const out: Sample[] = []
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
    if (!nm) throw new Error(`metrics: cannot parse line ${JSON.stringify(raw)}`)
    const name = nm[0]
    let i = name.length
    const labels: Record<string, string> = {}
    if (line[i] === '{') {
      i++
      for (;;) {
        while (line[i] === ' ' || line[i] === ',') i++
        if (line[i] === '}') { i++; break }
        const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i))
        if (!ln || line[i + ln[0].length] !== '=' || line[i + ln[0].length + 1] !== '"') throw new Error(`metrics: cannot parse labels in ${JSON.stringify(raw)}`)
        i += ln[0].length + 2
        let v = ''
        for (;;) {
          const c = line[i++]
          if (c === undefined) throw new Error(`metrics: unterminated label value in ${JSON.stringify(raw)}`)
          if (c === '"') break
          if (c === '\\') {
            const e = line[i++]
            v += e === 'n' ? '\n' : e
          } else v += c
        }
        labels[ln[0]] = v
      }
    }
    const rest = line.slice(i).trim().split(/\s+/)
    // Go's ParseFloat rules: NaN and Inf in any letter case (prom-client prints "Nan").
    const v = (rest[0] ?? '').toLowerCase()
    const value = v === 'nan' ? NaN : v === '+inf' || v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v === '' ? NaN : Number(v)
    if (Number.isNaN(value) && v !== 'nan') throw new Error(`metrics: no value in ${JSON.stringify(raw)}`)
    out.push({ name, labels, value })
  }
  return out
}

/** Sum of the samples named `name` whose labels include every entry of `labels` (see the rule above). */
export function sampleSum (text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const s of parseSamples(text)) {
    if (s.name !== name) continue
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value
  }
  return sum
}

/** GET `<adminUrl>/metrics` and return `sampleSum` of it. */
export async function metric (adminUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await request(adminUrl + '/metrics')
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`metrics: ${adminUrl}/metrics answered ${res.statusCode}`)
  return sampleSum(text, name, labels)
}
