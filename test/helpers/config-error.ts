// Assert that a YAML config is refused at load, and that the issues, as Sluice prints them
// (`file:line:col key.path: message`), match `pattern`.
import assert from 'node:assert/strict'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'

export function assertRefused (yaml: string, ...patterns: RegExp[]): void {
  assert.throws(() => parseConfig(yaml, 'test.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    const msgs = err.issues.map(formatIssue).join('\n')
    for (const p of patterns) assert.match(msgs, p, msgs)
    return true
  })
}
