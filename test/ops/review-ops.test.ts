// Operator-facing checks of the `sluice` CLI and the ops assets, from an operations review:
//  - `sluice validate FILE` checks FILE (not the default config in its place);
//  - a command line the CLI cannot parse (an unknown flag, --config without a value) is a
//    usage error: exit 2, the message and the usage on stderr, no stack trace.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cliCommand } from '../helpers/cli.js'
import { repo } from './ops-helpers.js'

function sluice (args: string[], env: Record<string, string | undefined> = {}): { status: number | null, stdout: string, stderr: string } {
  const [cmd, argv] = cliCommand(args)
  const base = { ...process.env }
  delete base.SLUICE_CONFIG
  const r = spawnSync(cmd, argv, { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const GOOD = `upstreams:
  api: { url: "http://127.0.0.1:3000" }
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: api
`
// listen.port out of range on line 2; the route names an upstream that does not exist.
const BAD = `listen:
  port: 99999
upstreams:
  api: { url: "http://127.0.0.1:3000" }
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: api
`

test('review-ops: `sluice validate FILE` checks FILE, not the default config', { timeout: 120000 }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-validate-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const bad = join(dir, 'bad.yaml')
  const good = join(dir, 'good.yaml')
  writeFileSync(bad, BAD)
  writeFileSync(good, GOOD)

  const b = sluice(['validate', bad])
  assert.equal(b.status, 1, `a bad file named by position fails: ${b.stdout}${b.stderr}`)
  assert.equal(b.stdout, '', 'errors go to stderr only')
  assert.match(b.stderr, new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:\\d+ listen\\.port: `, 'm'), b.stderr)

  const g = sluice(['validate', good])
  assert.equal(g.status, 0, g.stderr)
  assert.match(g.stdout, new RegExp(`^${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: OK \\(1 routes, 1 upstreams`), g.stdout)

  // The same file twice is fine; two different files is a usage error.
  assert.equal(sluice(['validate', '--config', good, good]).status, 0)
  const two = sluice(['validate', '--config', good, bad])
  assert.equal(two.status, 2, two.stderr)
  assert.match(two.stderr, /two config files/)
  const three = sluice(['validate', good, bad])
  assert.equal(three.status, 2, three.stderr)
})

test('review-ops: an unknown flag or a flag without its value is a usage error (exit 2, usage on stderr, no stack)', { timeout: 120000 }, () => {
  for (const args of [['validate', '--bogus'], ['--conifg', 'x.yaml'], ['validate', '--config']]) {
    const r = sluice(args)
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^sluice: /, r.stderr)
    assert.match(r.stderr, /usage:\n/, r.stderr)
    assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace: ${r.stderr}`)
  }
  const h = sluice(['validate', '--help'])
  assert.equal(h.status, 0)
  assert.match(h.stdout, /^usage:\n/)
  assert.equal(h.stderr, '')
})
