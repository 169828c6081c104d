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
