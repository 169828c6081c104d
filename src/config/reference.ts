// Renders docs/configuration.md and config/sluice.schema.json from the one config schema.
import { ConfigSchema } from './schema.js'
import { jsonSchemaForEditors } from './types-helpers.js'

interface Row { path: string; type: string; def: string; desc: string }
type S = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

function typeOf (schema: S): string {
  if (schema.anyOf) return schema.anyOf.map((x: S) => x.const !== undefined ? JSON.stringify(x.const) : x.type).join(' \\| ')
  if (schema.type === 'array') return `list of ${schema.items?.anyOf ? schema.items.anyOf.map((x: S) => JSON.stringify(x.const)).join('/') : schema.items?.type}`
  return schema.type ?? ''
}

export function configRows (): Row[] {
  const rows: Row[] = []
  const walk = (schema: S, path: string) => {
    const desc = String(schema.description ?? '').replace(/\|/g, '\\|')
    if (schema.type === 'object' && schema.properties) {
      if (path) rows.push({ path, type: 'object', def: '', desc })
      for (const [k, v] of Object.entries(schema.properties as Record<string, S>)) walk(v, path ? `${path}.${k}` : k)
    } else if (schema.type === 'object' && schema.patternProperties) {
      rows.push({ path, type: 'map', def: '', desc })
      for (const v of Object.values(schema.patternProperties as Record<string, S>)) walk(v, `${path}.<name>`)
    } else if (schema.type === 'array' && schema.items?.type === 'object') {
      rows.push({ path, type: 'list', def: '', desc })
      walk(schema.items, `${path}[]`)
    } else if (schema.type === 'array' && schema.items?.anyOf?.some((x: S) => x.type === 'object')) {
      // A list whose items are a scalar or an object (upstreams.<name>.targets: URL or { url, weight }).
      const alts = schema.items.anyOf as S[]
      rows.push({ path, type: `list of ${alts.map((x) => x.type).join(' or ')}`, def: '', desc: desc + (schema.items.description ? ` (${String(schema.items.description)})` : '') })
      for (const alt of alts) if (alt.type === 'object') walk(alt, `${path}[]`)
    } else {
      rows.push({ path, type: typeOf(schema), def: schema.default === undefined ? '' : '`' + JSON.stringify(schema.default) + '`', desc })
    }
  }
  walk(ConfigSchema as S, '')
  return rows
}

export function renderConfigReference (): string {
  const rows = configRows()
  return ['# Configuration reference', '',
    'Generated from the config schema (`src/config/schema.ts` and the schema beside each stage) by `npm run schema`; a test fails when it is stale.',
    'Unknown keys are errors, except top-level keys that start with `x-` (ignored: a place for YAML anchors that other keys merge with `<<: *name`). A key without a default is required when its parent block is present.',
    'Values may use `${VAR}` and `${VAR:-default}` (an unset variable without a default is an error).',
    'Durations are milliseconds (`…Ms`) or seconds (`…Seconds`); sizes are bytes. See README.md for what each part does.', '',
    '| key | type | default | description |', '|---|---|---|---|',
    ...rows.map((r) => `| \`${r.path}\` | ${r.type} | ${r.def} | ${r.desc} |`), ''].join('\n')
}

export function renderJsonSchema (): string {
  return JSON.stringify(jsonSchemaForEditors(ConfigSchema), null, 2) + '\n'
}
