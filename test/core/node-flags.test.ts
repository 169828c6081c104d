// Sluice's V8 flags (src/node-flags.ts) are written out literally where no import can reach:
// the bin's shebang and the Dockerfile's CMD. This keeps those copies equal to the list.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { NODE_FLAGS, withNodeFlags } from '../../src/node-flags.js'

test('the bin shebang and the Dockerfile start node with NODE_FLAGS', () => {
  const shebang = readFileSync('src/cli.ts', 'utf8').split('\n')[0]
  assert.equal(shebang, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`)
  const cmd = readFileSync('Dockerfile', 'utf8').split('\n').find((l) => l.startsWith('CMD ["node"'))
  assert.ok(cmd, 'the Dockerfile has a CMD starting node')
  assert.deepEqual(JSON.parse(cmd.slice(4)).slice(1, 1 + NODE_FLAGS.length), [...NODE_FLAGS])
})

test('workers get the flags unless the primary already set them', () => {
  assert.deepEqual(withNodeFlags([]), [...NODE_FLAGS])
  assert.deepEqual(withNodeFlags(['--max-semi-space-size=32']), ['--max-semi-space-size=32', ...NODE_FLAGS.filter((f) => !f.startsWith('--max-semi-space-size'))])
  assert.deepEqual(withNodeFlags(['--enable-source-maps']), ['--enable-source-maps', ...NODE_FLAGS])
  // --memory-reducer and --no-memory-reducer name the same flag: the operator's choice stays.
  assert.deepEqual(withNodeFlags(['--memory-reducer']), ['--memory-reducer', ...NODE_FLAGS.filter((f) => f !== '--no-memory-reducer')])
})
