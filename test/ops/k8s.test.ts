// The Kubernetes sidecar example: a Deployment with the app and Sluice containers, the config
// from a ConfigMap (valid for Sluice's loader), probes on /healthz and /readyz of the admin
// port, and ports that agree with the config.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import YAML from 'yaml'
import { read, repo, configErrors, loadConfigText } from './ops-helpers.js'

/* eslint-disable @typescript-eslint/no-explicit-any */
const files = readdirSync(repo('deploy/k8s')).filter((f) => /\.ya?ml$/.test(f))
const docs: any[] = files.flatMap((f) => YAML.parseAllDocuments(read('deploy/k8s', f)).map((d) => {
  assert.deepEqual(d.errors, [], `deploy/k8s/${f} parses`)
  return d.toJS()
}))
const configMap = docs.find((d) => d.kind === 'ConfigMap')
const deployment = docs.find((d) => d.kind === 'Deployment')
const sluiceYaml: string = configMap?.data?.['sluice.yaml']
const env = { SLUICE_ADMIN_TOKEN: 'k8s-token', REDIS_URL: '' }

test('the sidecar manifest has a ConfigMap with a valid Sluice config and a Deployment with two containers', () => {
  assert.ok(configMap && deployment)
  assert.deepEqual(configErrors(sluiceYaml, 'ConfigMap sluice-config', env), [])
  const containers = deployment.spec.template.spec.containers
  assert.equal(containers.length, 2, 'the app and the Sluice sidecar')
  assert.equal(deployment.spec.selector.matchLabels.app, deployment.spec.template.metadata.labels.app)
})

test('the Sluice sidecar mounts the ConfigMap at its --config path and probes /healthz and /readyz on the admin port', () => {
  const c = loadConfigText(sluiceYaml, 'ConfigMap', env)
  const spec = deployment.spec.template.spec
  const sluice = spec.containers.find((x: any) => x.name === 'sluice')
  const args: string[] = [...(sluice.command ?? []), ...(sluice.args ?? [])]
  const configPath = args[args.indexOf('--config') + 1]
  const mount = sluice.volumeMounts.find((m: any) => configPath.startsWith(m.mountPath + '/'))
  assert.ok(mount, `a volume is mounted over ${configPath}`)
  const volume = spec.volumes.find((v: any) => v.name === mount.name)
  assert.equal(volume.configMap.name, configMap.metadata.name)
  assert.ok(configMap.data[configPath.slice(mount.mountPath.length + 1)], 'the ConfigMap has the file the args name')

  const ports = Object.fromEntries(sluice.ports.map((p: any) => [p.name, p.containerPort]))
  assert.equal(ports.http, c.listen.port)
  assert.equal(ports.admin, c.admin.port)
  const probePort = (p: any) => typeof p.httpGet.port === 'string' ? ports[p.httpGet.port] : p.httpGet.port
  assert.equal(sluice.livenessProbe.httpGet.path, '/healthz')
  assert.equal(sluice.readinessProbe.httpGet.path, '/readyz')
  for (const p of [sluice.livenessProbe, sluice.readinessProbe, sluice.startupProbe].filter(Boolean)) assert.equal(probePort(p), c.admin.port)
  assert.equal(c.admin.host, '0.0.0.0', 'the kubelet reaches the admin port')
  assert.ok(sluice.env.some((e: any) => e.name === 'SLUICE_ADMIN_TOKEN' && e.valueFrom?.secretKeyRef), 'the token comes from a Secret')
  assert.ok(spec.terminationGracePeriodSeconds * 1000 > (c.shutdownGraceMs ?? 10000), 'the pod waits for the drain')
})

test('the app container is what the Sluice upstream points at', () => {
  const c = loadConfigText(sluiceYaml, 'ConfigMap', env)
  const url = new URL((Object.values(c.upstreams)[0] as { url: string }).url)
  assert.equal(url.hostname, '127.0.0.1', 'same pod: loopback')
  const app = deployment.spec.template.spec.containers.find((x: any) => x.name !== 'sluice')
  assert.match(JSON.stringify(app), new RegExp(`listen\\(${url.port}`))
  const svc = docs.find((d) => d.kind === 'Service')
  if (svc) assert.ok(svc.spec.ports.every((p: any) => p.targetPort === 'http'), 'the Service sends traffic to Sluice, not the app')
})
