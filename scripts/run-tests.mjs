// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner.
// `npm test` builds first. Pass file filters as arguments: `node scripts/run-tests.mjs cache`.
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'

function walk (dir) {
  let out = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out = out.concat(walk(p))
    else if (name.endsWith('.test.js')) out.push(p)
  }
  return out
}

const filters = process.argv.slice(2)
const files = walk('dist/test').filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort()
if (files.length === 0) {
  console.error('no test files found under dist/test (did the build run?)')
  process.exit(1)
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=180000', '--test-reporter=spec', ...files], { stdio: 'inherit' })
process.exit(r.status ?? 1)
