// The package version, read once from package.json. A leaf module: the composition root
// (main.ts), the cluster primary and the CLI all import it from here.
import { readFileSync } from 'node:fs'

export const VERSION: string = (() => {
  // dist/src/version.js is two levels below the package root; src/version.ts (tsx) is one.
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8'))
      if (pkg.name === 'sluice') return pkg.version
    } catch { /* try the next */ }
  }
  return '0.0.0'
})()
