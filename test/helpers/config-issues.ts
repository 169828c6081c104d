// Config-error tests: a minimal valid file to extend, and the formatted issues a text gives.
import assert from 'node:assert/strict'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'

/** One upstream and one route; tests append keys to the route (4-space indent) or after it. */
export const BASE_CONFIG = `upstreams:
  api:
    url: http://127.0.0.1:3000
routes:
  - name: a
    match: { pathPrefix: /api/ }
    upstream: api
`

/** The formatted issues (file:line:col path: message) parsing `yaml` gives, [] when it loads. */
export function configIssues (yaml: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(yaml, 'test.yaml', env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.issues.map(formatIssue)
  }
  return []
}
