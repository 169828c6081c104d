// Operator-facing checks of the `sluice` CLI and the ops assets, from an operations review:
//  - a command line the CLI cannot parse (an unknown flag, --config without a value) is a
//    usage error: exit 2, the message and the usage on stderr, no stack trace.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cliCommand } from '../helpers/cli.js'
import { repo } from './ops-helpers.js'

function sluice (args: string[], env: Record<string, string | undefined> = {}): { status: number | null, stdout: string, stderr: string } {
  const [cmd, argv] = cliCommand(args)
  const base = { ...process.env }
  delete base.SLUICE_CONFIG
  const r = spawnSync(cmd, argv, { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

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
