// Shared by the operations tests: the repository root (from test/ops under tsx or
// dist/test/ops when compiled), and validation of a config text with Sluice's own loader.
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'
import { compile } from '../../src/config/compile.js'

function findRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'sluice' && existsSync(join(dir, 'src'))) return dir
    const up = dirname(dir)
    if (up === dir) throw new Error('cannot find the repository root')
    dir = up
  }
}

export const root = findRoot()
export const repo = (...p: string[]): string => join(root, ...p)
export const read = (...p: string[]): string => readFileSync(repo(...p), 'utf8')
export const exists = (...p: string[]): boolean => existsSync(resolve(root, ...p))

/** Imports a JavaScript module of the repository (typed loosely: these are .mjs/.js files). */
export async function importRepo (path: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return import(pathToFileURL(repo(path)).href)
}

/** The environment the container and sidecar configs expect. */
export const CONTAINER_ENV: NodeJS.ProcessEnv = { SLUICE_ADMIN_TOKEN: 'test-token', REDIS_URL: '', ORIGIN_URL: 'http://127.0.0.1:3000' }

/** Loads and compiles a config text with Sluice's loader; returns the error lines (empty when valid). */
export function configErrors (text: string, file: string, env: NodeJS.ProcessEnv = CONTAINER_ENV): string[] {
  try {
    const loaded = parseConfig(text, file, env)
    compile(loaded.config, loaded.raw, file)
    return []
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map(formatIssue)
    return [String((err as Error).stack ?? err)]
  }
}

/** The loaded (validated, defaults merged) config of a text, for assertions on its values. */
export function loadConfigText (text: string, file: string, env: NodeJS.ProcessEnv = CONTAINER_ENV): Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return parseConfig(text, file, env).config as unknown as Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any
}
