// `npm run schema`: writes config/sluice.schema.json and docs/configuration.md from the
// config schema (built into dist/). test/core/docs.test.ts fails when either is stale.
import { writeFileSync } from 'node:fs'
import { renderConfigReference, renderJsonSchema } from '../dist/src/config/reference.js'

writeFileSync('docs/configuration.md', renderConfigReference())
writeFileSync('config/sluice.schema.json', renderJsonSchema())
console.log('wrote docs/configuration.md and config/sluice.schema.json')
