// Starts a real `windflow up` on the example system for the end-to-end tests: free ports, a temp data dir,
// the example's services rewritten to free ports and to a copy of their program inside the temp dir (so every
// process this run starts is recognisable by its command line and can be cleaned up by PID).
import { spawn } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, openSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const ROOT = resolve(WEB, '..')

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolvePort(port))
    })
  })
}

async function freePorts(n) {
  const ports = new Set()
  while (ports.size < n) ports.add(await freePort())
  return [...ports]
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** PIDs of live processes whose command line mentions `needle` (never this process). */
export function processesWith(needle) {
  const out = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ')
      if (cmd.includes(needle)) out.push(Number(entry))
    } catch {
      /* gone */
    }
  }
  return out
}

export function commandLine(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    return null
  }
}

export async function startWindflow({ log = () => {} } = {}) {
  const python = join(ROOT, '.venv/bin/windflow')
  if (!existsSync(python)) throw new Error('no .venv/bin/windflow: run scripts/setup first')
  const dist = join(WEB, 'dist', 'index.html')
  if (!existsSync(dist)) throw new Error('no web/dist: run npm run build first')
  const tmp = mkdtempSync(join(tmpdir(), 'windflow-e2e-'))
  const [api, temporal, ui, ...servicePorts] = await freePorts(8)
  copyFileSync(join(ROOT, 'examples/services/standin.py'), join(tmp, 'standin.py'))
  let system = readFileSync(join(ROOT, 'examples/windflow.yaml'), 'utf8')
  const fixed = ['15432', '16379', '15673', '18080', '18081']
  fixed.forEach((port, i) => {
    system = system.replaceAll(port, String(servicePorts[i]))
  })
  system = system.replaceAll('services/standin.py', join(tmp, 'standin.py'))
  writeFileSync(join(tmp, 'windflow.yaml'), system)
  const password = `e2e-${Math.random().toString(36).slice(2)}-pw`
  const env = {
    ...process.env,
    WINDFLOW_DATA_DIR: join(tmp, 'data'),
    WINDFLOW_API_PORT: String(api),
    WINDFLOW_TEMPORAL_PORT: String(temporal),
    WINDFLOW_TEMPORAL_UI_PORT: String(ui),
    WINDFLOW_WORKER_METRICS_PORT: '0',
    WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD: password,
    WINDFLOW_DASHBOARD_DIR: join(WEB, 'dist'),
    WINDFLOW_CONFIG_FILE: join(tmp, 'windflow.toml'),
    WINDFLOW_EVENTS_METRICS_INTERVAL: '2',
    WINDFLOW_LOG_FORMAT: 'console',
    // the webhook and notification-channel steps post to receivers on loopback
    WINDFLOW_OUTBOUND_PRIVATE_NOTIFY: 'true',
  }
  // run another copy of windflow's sources (e.g. a release under test) with the same virtualenv
  if (process.env.WINDFLOW_E2E_PYTHONPATH) env.PYTHONPATH = process.env.WINDFLOW_E2E_PYTHONPATH
  const out = openSync(join(tmp, 'windflow-up.log'), 'a')
  const child = spawn(join(ROOT, '.venv/bin/windflow'), ['up', join(tmp, 'windflow.yaml'), '--no-init', '--stop-services'], {
    cwd: tmp,
    env,
    stdio: ['ignore', out, out],
  })
  const base = `http://127.0.0.1:${api}`
  log(`windflow up (pid ${child.pid}) on ${base}, data in ${tmp}`)

  let exited = null
  child.on('exit', (code, signal) => {
    exited = { code, signal }
  })

  async function stop() {
    if (exited === null) {
      child.kill('SIGTERM')
      for (let i = 0; i < 150 && exited === null; i++) await sleep(100)
      if (exited === null) child.kill('SIGKILL')
    }
    // anything this run started that is still alive (services, the dev server): by PID, found by our temp dir
    for (let round = 0; round < 3; round++) {
      const left = processesWith(tmp)
      if (!left.length) break
      for (const pid of left) {
        try {
          process.kill(pid, round === 0 ? 'SIGTERM' : 'SIGKILL')
        } catch {
          /* gone */
        }
      }
      await sleep(500)
    }
  }

  const deadline = Date.now() + 90_000
  let token = null
  while (Date.now() < deadline) {
    if (exited !== null) {
      const text = readFileSync(join(tmp, 'windflow-up.log'), 'utf8')
      throw new Error(`windflow up exited ${JSON.stringify(exited)}:\n${text.slice(-3000)}`)
    }
    try {
      if (!token) {
        const r = await fetch(`${base}/api/v1/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: 'admin', password }),
        })
        if (r.ok) token = (await r.json()).access_token
      }
      if (token) {
        const r = await fetch(`${base}/api/v1/services`, { headers: { authorization: `Bearer ${token}` } })
        if (r.ok && (await r.json()).items.length >= fixed.length) break // the services with ports, and the migrate job
      }
    } catch {
      /* not up yet */
    }
    await sleep(300)
  }
  if (!token) {
    await stop()
    throw new Error('windflow did not come up within 90 s')
  }

  async function api_(path, init = {}) {
    const r = await fetch(`${base}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } })
    if (!r.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${r.status} ${await r.text()}`)
    return r.status === 204 ? null : r.json()
  }

  return {
    base,
    password,
    tmp,
    uiPort: ui,
    api: api_,
    stop,
    cleanup() {
      rmSync(tmp, { recursive: true, force: true })
    },
  }
}
