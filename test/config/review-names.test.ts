// Limits the schema alone missed: an upstream named __proto__ (the YAML parser makes it an own
// key the name pattern never sees; compiled, it replaced the upstream map's prototype), and
// millisecond settings past what a Node timer holds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseConfig } from '../../src/config/load.js'
import { assertRefused } from '../helpers/config-error.js'

test('an upstream named __proto__ is refused at load, naming the key path', () => {
  const yaml = `upstreams:
  __proto__: { url: "http://127.0.0.1:8080" }
  api: { url: "http://127.0.0.1:8081" }
routes:
  - name: r
    upstream: api
`
  assertRefused(yaml, /upstreams\.__proto__.*not a valid upstream name/)
})

test('a millisecond setting past 2^31 - 1 (Node would fire its timer after 1 ms) is refused at load, naming the key path', () => {
  const yaml = (ms: number) => `upstreams:
  api: { url: "http://127.0.0.1:8081", timeoutMs: ${ms} }
routes:
  - name: r
    upstream: api
    timeoutMs: ${ms}
`
  assertRefused(yaml(3_000_000_000), /upstreams\.api\.timeoutMs/, /routes\[0\]\.timeoutMs/)
  assert.doesNotThrow(() => parseConfig(yaml(2_147_483_647), 'test.yaml', {}))
})
