// Upstream names: the schema's name pattern covers every key, __proto__ included (the YAML
// parser makes it an own key, and compiled it would have replaced the upstream map's prototype).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'

test('an upstream named __proto__ is refused at load, naming the key path', () => {
  const yaml = `upstreams:
  __proto__: { url: "http://127.0.0.1:8080" }
  api: { url: "http://127.0.0.1:8081" }
routes:
  - name: r
    upstream: api
`
  assert.throws(() => parseConfig(yaml, 'test.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    const msgs = err.issues.map(formatIssue).join('\n')
    assert.match(msgs, /upstreams\.__proto__.*not a valid upstream name/, msgs)
    return true
  })
})
