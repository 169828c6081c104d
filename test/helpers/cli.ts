// How to run the `sluice` CLI from a test: the compiled dist/src/cli.js when the tests run
// compiled (npm test), or src/cli.ts through tsx when a developer runs one file with tsx.
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const here = dirname(fileURLToPath(import.meta.url))
const compiled = import.meta.url.endsWith('.js')

export function cliCommand (args: string[]): [string, string[]] {
  if (compiled) return [process.execPath, [join(here, '../../src/cli.js'), ...args]]
  return [process.execPath, ['--import', 'tsx', join(here, '../../src/cli.ts'), ...args]]
}

/**
 * The proxy and admin URLs a `sluice` CLI process (single process, not `workers:`) reports in
 * its "sluice started" log line, or null while that line has not been printed. With
 * `listen.port: 0` and `admin.port: 0` this is how a test learns the ports the OS chose.
 */
export function startedUrls (out: string[]): { url: string; adminUrl: string } | null {
  for (const line of out.join('').split('\n')) {
    if (!line.includes('sluice started')) continue
    try {
      const rec = JSON.parse(line) as { msg?: string; proxy?: string; admin?: string }
      if (rec.msg === 'sluice started' && rec.proxy && rec.admin) {
        return { url: rec.proxy.replace('0.0.0.0', '127.0.0.1'), adminUrl: rec.admin.replace('0.0.0.0', '127.0.0.1') }
      }
    } catch { /* a partial line: not yet */ }
  }
  return null
}
