// End-to-end: a real headless Chromium (Debian's, driven by playwright-core) against a real `windflow up` on
// the example system. Screenshots go to e2e/artifacts/. Usage: node e2e/run.mjs (after npm run build).
import { mkdirSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { commandLine, startWindflow, WEB } from './server.mjs'

const ARTIFACTS = join(WEB, 'e2e', 'artifacts')
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const started = Date.now()
const log = (msg) => console.log(`[e2e ${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${msg}`)

mkdirSync(ARTIFACTS, { recursive: true })

const results = []
let page
let windflow
let browser

async function shot(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

async function step(name, fn) {
  const t0 = Date.now()
  try {
    await fn()
    results.push({ name, ok: true, ms: Date.now() - t0 })
    log(`ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`)
  } catch (error) {
    results.push({ name, ok: false, ms: Date.now() - t0, error })
    log(`FAIL  ${name}: ${error.stack ?? error}`)
    await shot(`FAILED-${name.replace(/\W+/g, '-')}`).catch(() => {})
    throw error
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message)
}

async function main() {
  windflow = await startWindflow({ log })
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } })
  page = await context.newPage()
  page.setDefaultTimeout(30_000)
  const consoleErrors = []
  page.on('pageerror', (e) => consoleErrors.push(String(e)))

  await step('sign in', async () => {
    await page.goto(`${windflow.base}/services`)
    await page.waitForURL(/\/login\?next=/)
    await shot('01-login')
    await page.fill('input[name="username"]', 'admin')
    await page.fill('input[name="password"]', 'wrong password')
    await page.click('button[type="submit"]')
    await page.waitForSelector('[data-testid="login-error"]')
    await page.fill('input[name="password"]', windflow.password)
    await page.click('button[type="submit"]')
    await page.waitForURL(/\/services$/)
    await page.waitForSelector('[data-testid="services-table"] tr[data-service="api"]')
    await page.waitForSelector('[data-testid="connection"].open')
  })

  await step('token survives a reload', async () => {
    await page.reload()
    await page.waitForSelector('[data-testid="services-table"] tr[data-service="database"]')
    assert((await page.textContent('[data-testid="user"]')).includes('admin'), 'signed-in user shown')
  })

  await step('start an initialization and see every component turn healthy', async () => {
    await page.click('text=Initialization')
    await page.click('[data-testid="start-init"]')
    await page.waitForSelector('[data-testid="init-dialog"]')
    await shot('02-start-dialog')
    await page.click('[data-testid="confirm-ok"]')
    await page.waitForSelector('[data-testid="current-run"]')
    // progress moves live: a component passes through a non-final status before all are healthy
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="components"] tr[data-component]').length === 6, null, { timeout: 30_000 })
    await shot('03-initializing')
    await page.waitForFunction(
      () => [...document.querySelectorAll('[data-testid="components"] tr[data-component]')].every((r) =>
        ['HEALTHY', 'COMPLETED'].includes(r.getAttribute('data-status') ?? '')),
      null,
      { timeout: 90_000 },
    )
    await page.waitForSelector('[data-testid="current-run"] [data-testid="status"][data-state="SUCCEEDED"]', { timeout: 60_000 })
    const progress = await page.getAttribute('[data-testid="current-run"] [role="progressbar"]', 'aria-valuenow')
    assert(progress === '100', `progress 100, got ${progress}`)
    const link = await page.getAttribute('[data-testid="current-run"] [data-testid="temporal-link"]', 'href')
    assert(link && link.includes(`:${windflow.uiPort}/namespaces/default/workflows/init%2F`), `Temporal link, got ${link}`)
    await page.waitForSelector('[data-testid="init-history"] tbody tr [data-state="SUCCEEDED"]')
    await shot('04-initialized')
  })

  await step('overview: the dependency graph is all healthy', async () => {
    await page.click('a.brand')
    await page.waitForFunction(
      () => {
        const nodes = [...document.querySelectorAll('[data-testid="graph-node"]')]
        return nodes.length === 6 && nodes.every((n) => n.getAttribute('data-health') === 'HEALTHY')
      },
      null,
      { timeout: 30_000 },
    )
    await page.waitForSelector('[data-testid="event-feed"] li.initialization_update')
    const condition = await page.getAttribute('path.edge[data-edge="migrate->api"]', 'data-condition')
    assert(condition === 'completed_successfully', `the migrate -> api edge shows its condition, got ${condition}`)
    await shot('05-overview-healthy')
  })

  await step('kill a service process: it turns failed, then recovers live', async () => {
    await page.click('[data-testid="graph-node"][data-service="api"]')
    await page.waitForURL(/\/services\/api$/)
    await page.waitForSelector('[data-testid="service-state"][data-state="healthy"]')
    await page.waitForSelector('[data-testid="latency-line"]', { timeout: 30_000 })
    const before = await windflow.api('/api/v1/services/api')
    const pid = before.state_detail.pid
    const cmd = commandLine(pid)
    assert(pid && cmd && cmd.includes(windflow.tmp) && cmd.includes('--name api'), `pid ${pid} is our api process (${cmd})`)
    process.kill(pid, 'SIGKILL')
    log(`killed api (pid ${pid})`)
    // the supervisor sees the exit at once: the service is down (failed tone) while it is restarted
    await page.waitForSelector('[data-testid="transitions"] li .badge.failed', { timeout: 20_000 })
    await page.waitForSelector('[data-testid="toast"].error:has-text("api")')
    await shot('06-api-failed')
    await page.waitForSelector('[data-testid="transitions"] li[data-state="healthy"]', { timeout: 60_000 })
    await page.waitForSelector('[data-testid="service-state"][data-state="healthy"]')
    const after = await windflow.api('/api/v1/services/api')
    assert(after.state_detail.pid && after.state_detail.pid !== pid, `a new pid (${after.state_detail.pid})`)
    await page.waitForSelector('[data-testid="recoveries"] tbody tr [data-testid="status"]', { timeout: 30_000 })
    await shot('07-api-recovered')
  })

  await step("the service's logs: its output, live", async () => {
    // the restarted api's stand-in prints a line when it listens: the logs panel shows it (from the host's files)
    await page.waitForSelector('[data-testid="service-logs"] [data-testid="logs-lines"] span[data-stream="stdout"]:has-text("standin[api")',
      { timeout: 20_000 })
    await shot('07b-api-logs')
  })

  await step("the service's state timeline: the crash as a band, live and from the stored history", async () => {
    const failedBand = '[data-testid="status-timeline"] [data-testid="timeline-band"].tone-failed'
    await page.waitForSelector(failedBand, { timeout: 20_000 }) // appended live from SERVICE_STATUS_UPDATE
    await page.reload()
    await page.waitForSelector(failedBand) // the same, read back from the stored history
    const last = await page.getAttribute('[data-testid="status-timeline"] [data-testid="timeline-band"]:last-child', 'data-state')
    assert(last === 'healthy', `the timeline ends healthy, got ${last}`)
    await page.click('[data-testid="timeline-range-15m"]')
    await page.waitForSelector(failedBand)
    // a custom range before the service existed: no data, one grey band
    await page.click('[data-testid="timeline-range-custom"]')
    await page.fill('[data-testid="timeline-range-from"]', '2020-01-01T00:00')
    await page.fill('[data-testid="timeline-range-to"]', '2020-01-02T00:00')
    await page.click('[data-testid="timeline-range-apply"]')
    await page.waitForFunction(() => {
      const bands = [...document.querySelectorAll('[data-testid="status-timeline"] [data-testid="timeline-band"]')]
      return bands.length === 1 && bands[0].getAttribute('data-state') === 'no data'
    })
    await page.click('[data-testid="timeline-range-1h"]')
    await page.waitForSelector(failedBand)
    const h = await windflow.api('/api/v1/services/api/status-history?since=' + encodeURIComponent(new Date(Date.now() - 3_600_000).toISOString()))
    assert(h.changes.some((c) => ['unhealthy', 'recovering'].includes(c.state)), `stored changes: ${JSON.stringify(h.changes.map((c) => c.state))}`)
    await shot('07c-api-timeline')
  })

  await step('edit, diff and revert a config', async () => {
    await page.goto(`${windflow.base}/configs/cache`)
    await page.waitForFunction(() => document.querySelector('[data-testid="config-editor"]')?.value.startsWith('{'))
    const original = JSON.parse(await page.inputValue('[data-testid="config-editor"]'))
    await page.waitForSelector('[data-testid="rollouts"]:has-text("No rollout yet")') // the rollouts card, from the API
    const editor = page.locator('[data-testid="config-editor"]')
    // an invalid change is shown inline and cannot be saved
    const invalid = { ...original, health: { ...original.health, kind: 'carrier-pigeon' } }
    await editor.fill(JSON.stringify(invalid, null, 2))
    await page.waitForSelector('[data-testid="config-problems"] li')
    assert(await page.isDisabled('[data-testid="config-save"]'), 'save disabled while invalid')
    await shot('08-config-invalid')
    const changed = { ...original, description: 'Stand-in for Redis (edited in the dashboard)' }
    await editor.fill(JSON.stringify(changed, null, 2))
    await page.waitForSelector('[data-testid="config-valid"]')
    await page.click('[data-testid="config-save"]')
    await page.waitForFunction(() => document.querySelector('[data-testid="config-version"]')?.textContent?.trim() === 'v2')
    await page.click('[data-testid="tab-history"]')
    await page.selectOption('[data-testid="diff-from"]', '1')
    await page.selectOption('[data-testid="diff-to"]', '2')
    await page.click('[data-testid="diff-show"]')
    await page.waitForSelector('[data-testid="diff"] code:has-text("/description")')
    await shot('09-config-diff')
    await page.click('[data-testid="revert-1"]')
    await page.click('[data-testid="confirm-ok"]')
    await page.waitForFunction(() => document.querySelector('[data-testid="config-version"]')?.textContent?.trim() === 'v3')
    let current = await windflow.api('/api/v1/services/cache/config')
    for (let i = 0; i < 50 && current.version !== 3; i++) {
      await new Promise((r) => setTimeout(r, 100))
      current = await windflow.api('/api/v1/services/cache/config')
    }
    assert(current.version === 3 && current.reverted_from === 1, `v3 reverted from v1: ${JSON.stringify(current).slice(0, 200)}`)
    assert(current.content.description === original.description, 'the original description is back')
    await page.waitForSelector('[data-testid="config-history"] tr[data-version="3"]')
    await shot('10-config-reverted')
  })

  await step('render a config template (from the Templates page)', async () => {
    await page.click('[data-testid="nav-templates"]')
    await page.waitForURL(/\/templates$/)
    const t = '[data-template="http-process"]'
    await page.click(`${t} summary`)
    // Chromium compiles the pattern with the v flag: an invalid one would switch the check off
    await page.fill(`${t} [data-testid="template-id"]`, 'Web Copy')
    const rejected = await page.$eval(`${t} [data-testid="template-id"]`, (el) => !el.checkValidity() && el.validity.patternMismatch)
    assert(rejected, 'the id pattern rejects "Web Copy"')
    await page.fill(`${t} [data-testid="template-id"]`, 'web-copy')
    assert(await page.$eval(`${t} [data-testid="template-id"]`, (el) => el.checkValidity()), 'the id pattern accepts "web-copy"')
    await page.click(`${t} [data-testid="template-preview"]`)
    await page.waitForSelector(`${t} [data-testid="template-error"]:has-text("command")`) // a required parameter
    await page.fill(`${t} input[placeholder^="command"]`, '["python3", "app.py"]')
    await page.fill(`${t} input[placeholder^="port"]`, '18090')
    await page.click(`${t} [data-testid="template-preview"]`)
    await page.waitForSelector(`${t} [data-testid="template-result"]:has-text("web-copy")`)
    const rendered = await page.textContent(`${t} [data-testid="template-result"]`)
    assert(rendered.includes('18090') && rendered.includes('app.py'), `parameters rendered: ${rendered}`)
    await shot('11-config-template')
  })

  await step('audit log shows what was done', async () => {
    await page.click('text=Audit')
    await page.fill('[data-testid="audit-action"]', 'config.revert')
    await page.press('[data-testid="audit-action"]', 'Enter')
    await page.waitForSelector('[data-testid="audit-table"] code:has-text("config.revert")')
    // a time range: the last 15 minutes still hold the revert; a day long ago holds nothing
    await page.click('[data-testid="audit-range-15m"]')
    await page.waitForSelector('[data-testid="audit-table"] code:has-text("config.revert")')
    await page.click('[data-testid="audit-range-custom"]')
    await page.fill('[data-testid="audit-range-from"]', '2020-01-01T00:00')
    await page.fill('[data-testid="audit-range-to"]', '2020-01-02T00:00')
    await page.click('[data-testid="audit-range-apply"]')
    await page.waitForSelector('[data-testid="audit-table"] td:has-text("No records.")')
    await page.click('[data-testid="audit-range-all"]')
    await page.waitForSelector('[data-testid="audit-table"] code:has-text("config.revert")')
    await shot('12-audit')
    // every record, long details included: the table wraps inside its card, the page never scrolls sideways
    await page.fill('[data-testid="audit-action"]', '')
    await page.press('[data-testid="audit-action"]', 'Enter')
    await page.waitForSelector('[data-testid="audit-table"] code:has-text("config.update")')
    const widths = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth,
      viewport: window.innerWidth,
      table: document.querySelector('[data-testid="audit-table"]').scrollWidth,
      card: document.querySelector('[data-testid="audit-table"]').parentElement.clientWidth,
    }))
    assert(widths.page <= widths.viewport && widths.table <= widths.card, `audit table fits: ${JSON.stringify(widths)}`)
  })

  await step('events page: the stream read back, by type and time range', async () => {
    await page.click('[data-testid="nav-events"]')
    await page.waitForURL(/\/events$/)
    await page.selectOption('[data-testid="events-types"]', ['SERVICE_STATUS_UPDATE'])
    await page.fill('[data-testid="events-service"]', 'api')
    await page.click('text=Filter')
    await page.waitForSelector('[data-testid="events-table"] tr[data-type="SERVICE_STATUS_UPDATE"]:has-text("recovering")')
    const types = await page.$$eval('[data-testid="events-table"] tbody tr[data-type]', (rows) => [...new Set(rows.map((r) => r.getAttribute('data-type')))])
    assert(types.length === 1 && types[0] === 'SERVICE_STATUS_UPDATE', `only status updates: ${types}`)
    await page.click('[data-testid="events-range-custom"]')
    await page.fill('[data-testid="events-range-from"]', '2020-01-01T00:00')
    await page.fill('[data-testid="events-range-to"]', '2020-01-02T00:00')
    await page.click('[data-testid="events-range-apply"]')
    await page.waitForSelector('[data-testid="events-table"] td:has-text("No events.")')
    await page.click('[data-testid="events-range-15m"]')
    await page.waitForSelector('[data-testid="events-table"] tr[data-type="SERVICE_STATUS_UPDATE"]')
    await shot('12b-events')
  })

  await step('schedules page lists the recovery sweep', async () => {
    await page.click('text=Schedules')
    await page.waitForSelector('[data-testid="schedules"] tbody tr td:has-text("windflow-")')
    await shot('13-schedules')
  })

  await step('alert hooks: create, receive an alert, edit, delete', async () => {
    await page.click('[data-testid="nav-hooks"]')
    await page.waitForURL(/\/hooks$/)
    await page.click('[data-testid="hook-new"]')
    await page.fill('[data-testid="hook-name"]', 'am-e2e')
    await page.click('[data-testid="hook-create"]')
    const token = (await page.textContent('[data-testid="secret-token"]')).trim()
    assert(token.startsWith('wf_hook_'), `the token is shown once: ${token}`)
    const r = await fetch(`${windflow.base}/api/v1/hooks/alertmanager`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ version: '4', status: 'firing', receiver: 'windflow', groupLabels: {}, commonLabels: {}, commonAnnotations: {}, externalURL: '',
        alerts: [{ status: 'firing', labels: { alertname: 'Down', windflow_service: 'ghost' }, annotations: {}, startsAt: new Date().toISOString(), fingerprint: 'e2e1' }] }),
    })
    assert(r.ok, `alert accepted: ${r.status} ${await r.text()}`)
    await page.click('[data-testid="secret-dismiss"]')
    await page.reload()
    await page.click('tr[data-hook="am-e2e"] a')
    await page.waitForSelector('[data-testid="hook-alerts"] tr[data-outcome="ignored"]:has-text("ghost")')
    await page.click('[data-testid="hook-edit"]')
    await page.fill('[data-testid="hook-edit-label"]', 'service')
    await page.click('[data-testid="hook-save"]')
    await page.waitForSelector('tr[data-hook="am-e2e"] code:has-text("label: service")')
    await shot('13a-hooks')
    await page.click('[data-testid="hook-delete-am-e2e"]')
    await page.click('[data-testid="confirm-ok"]')
    await page.waitForSelector('tr[data-hook="am-e2e"]', { state: 'detached' })
  })

  await step('outgoing webhooks: a failed delivery in the log, redelivered', async () => {
    let failing = true
    const received = []
    const receiver = createServer((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        received.push({ headers: req.headers, body })
        res.writeHead(failing ? 500 : 204).end()
      })
    })
    await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve))
    try {
      await page.click('[data-testid="nav-webhooks"]')
      await page.waitForURL(/\/webhooks$/)
      await page.click('[data-testid="webhook-new"]')
      await page.fill('[data-testid="webhook-url"]', `http://127.0.0.1:${receiver.address().port}/hook`)
      await page.uncheck('[data-testid="webhook-form"] label.check:has-text("every event type") input')
      await page.check('[data-testid="webhook-form"] input[value="ROLLOUT_UPDATE"]')
      await page.click('[data-testid="webhook-create"]')
      const secret = (await page.textContent('[data-testid="secret-secret"]')).trim()
      assert(secret.startsWith('whsec_'), `the secret is shown once: ${secret}`)
      await page.click('[data-testid="secret-dismiss"]')
      await page.click('[data-testid="webhook-ping"]')
      await page.waitForSelector('[data-testid="deliveries"] tr[data-state="failed"]:has-text("500")')
      failing = false
      await page.click('[data-testid="deliveries"] tr[data-state="failed"] [data-testid="redeliver"]')
      // the redelivery is queued (a new delivery id) and the open log follows it until it is delivered
      await page.waitForSelector('[data-testid="deliveries"] tr[data-state="delivered"]:has-text("redelivery of")', { timeout: 30_000 })
      const last = received.at(-1)
      assert(last.headers['webhook-signature']?.startsWith('v1,') && JSON.parse(last.body).event_type === 'PING', `signed redelivery: ${JSON.stringify(last.headers)}`)
      await shot('13b-webhooks')
    } finally {
      receiver.close()
    }
  })

  await step('notification channels: add, test-send, edit with the secret kept, delete', async () => {
    const received = []
    const receiver = createServer((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        received.push({ headers: req.headers, body: JSON.parse(body || 'null') })
        res.writeHead(200).end('ok')
      })
    })
    await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve))
    try {
      await page.click('[data-testid="nav-channels"]')
      await page.waitForURL(/\/channels$/)
      await page.click('[data-testid="channel-new"]')
      await page.fill('[data-testid="channel-name"]', 'oncall')
      await page.fill('[data-testid="channel-url"]', `http://127.0.0.1:${receiver.address().port}/notify`)
      await page.fill('[data-testid="channel-headers"]', 'Authorization: Bearer e2e-secret')
      await page.click('[data-testid="channel-save"]')
      await page.waitForSelector('tr[data-channel="oncall"]:has-text("**redacted**")')
      assert(!(await page.textContent('[data-testid="channels-table"]')).includes('e2e-secret'), 'the header is shown redacted')
      await page.click('[data-testid="channel-test-oncall"]')
      await page.waitForSelector('[data-testid="channel-deliveries"] tr[data-delivered="true"]')
      assert(received.length === 1 && received[0].headers.authorization === 'Bearer e2e-secret' && received[0].body.title.startsWith('Test notification'),
        `the test notification arrived: ${JSON.stringify(received)}`)
      // edit: the redacted header goes back as read, the stored secret stays
      await page.click('[data-testid="channel-edit-oncall"]')
      await page.fill('[data-testid="channel-form"] input[type="number"]', '7')
      await page.click('[data-testid="channel-save"]')
      await page.waitForSelector('tr[data-channel="oncall"] td:has-text("7s")')
      await page.click('[data-testid="channel-test-oncall"]')
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="channel-deliveries"] tr[data-delivered="true"]').length === 2)
      assert(received.length === 2 && received[1].headers.authorization === 'Bearer e2e-secret', 'the secret survived the edit')
      await shot('13d-channels')
      await page.click('[data-testid="channel-delete-oncall"]')
      await page.click('[data-testid="confirm-ok"]')
      await page.waitForSelector('tr[data-channel="oncall"]', { state: 'detached' })
    } finally {
      receiver.close()
    }
  })

  await step('users and roles: create, change role, disable, reset password', async () => {
    await page.click('[data-testid="nav-users"]')
    await page.waitForURL(/\/users$/)
    await page.waitForSelector('[data-testid="roles-table"] td:has-text("operator")')
    await page.click('[data-testid="user-new"]')
    await page.fill('[data-testid="user-username"]', 'olga')
    await page.fill('[data-testid="user-password"]', 'olga-password-1')
    await page.check('[data-testid="user-role-operator"]')
    await page.uncheck('[data-testid="user-role-viewer"]')
    await page.click('[data-testid="user-create"]')
    await page.waitForSelector('tr[data-user="olga"]')
    await page.check('[data-testid="role-olga-viewer"]')
    await page.uncheck('[data-testid="role-olga-operator"]')
    await page.click('[data-testid="roles-save-olga"]')
    await page.waitForSelector('[data-testid="roles-save-olga"]', { state: 'detached' })
    await page.click('[data-testid="user-toggle-olga"]')
    await page.waitForSelector('[data-testid="user-state-olga"]:has-text("disabled")')
    await page.click('[data-testid="user-reset-olga"]')
    await page.fill('[data-testid="user-new-password"]', 'olga-password-2')
    await page.click('[data-testid="confirm-ok"]')
    await page.waitForSelector('[data-testid="toast"]:has-text("Password of olga reset")')
    const olga = await windflow.api('/api/v1/users/olga')
    assert(olga.disabled && olga.roles.join() === 'viewer', `olga is a disabled viewer: ${JSON.stringify(olga)}`)
    const audit = await windflow.api('/api/v1/audit?action=user.update&target=olga')
    assert(audit.items.some((a) => a.details.password === 'changed'), 'the reset is audited')
    await shot('13c-users')
  })

  await step('sign out', async () => {
    await page.click('[data-testid="logout"]')
    await page.waitForURL(/\/login/)
    const stored = await page.evaluate(() => [localStorage.getItem('auth_token'), localStorage.getItem('config_cache')])
    assert(stored[0] === null && stored[1] === null, `token and config cache cleared: ${stored}`)
  })

  await step('a viewer sees no controls', async () => {
    const password = 'viewer-password-123'
    await windflow.api('/api/v1/users', { method: 'POST', body: JSON.stringify({ username: 'vera', password, roles: ['viewer'] }) })
    await page.fill('input[name="username"]', 'vera')
    await page.fill('input[name="password"]', password)
    await page.click('button[type="submit"]')
    await page.waitForSelector('[data-testid="graph-node"]')
    await page.click('text=Services')
    await page.waitForSelector('[data-testid="services-table"] tr[data-service="api"]')
    assert((await page.locator('[data-testid^="action-"]').count()) === 0, 'no start/stop/restart/recover buttons')
    assert((await page.locator('nav >> text=Audit').count()) === 0, 'no audit log link')
    assert((await page.locator('[data-testid="nav-channels"]').count()) === 1, 'channels are readable by a viewer')
    for (const id of ['nav-hooks', 'nav-webhooks', 'nav-users']) {
      assert((await page.locator(`[data-testid="${id}"]`).count()) === 0, `no ${id} link`)
    }
    await page.goto(`${windflow.base}/initialization`)
    await page.waitForSelector('[data-testid="current-run"]')
    assert((await page.locator('[data-testid="start-init"]').count()) === 0, 'no start button')
    await page.goto(`${windflow.base}/configs/api`)
    await page.waitForFunction(() => document.querySelector('[data-testid="config-editor"]')?.value.startsWith('{'))
    assert(await page.locator('[data-testid="config-editor"]').getAttribute('readonly') !== null, 'read-only editor')
    await page.goto(`${windflow.base}/audit`)
    await page.waitForSelector('text=Not allowed')
    await shot('14-viewer')
  })

  assert(consoleErrors.length === 0, `page errors: ${consoleErrors.join('\n')}`)
}

let failed = false
try {
  await main()
} catch {
  failed = true
} finally {
  await browser?.close().catch(() => {})
  if (windflow) {
    log('stopping windflow')
    await windflow.stop()
    if (!failed) windflow.cleanup()
    else log(`kept ${windflow.tmp} (windflow-up.log) for inspection`)
  }
}
const passed = results.filter((r) => r.ok).length
log(`${passed}/${results.length} steps passed${failed ? ' — FAILED' : ''}; screenshots in e2e/artifacts/`)
process.exit(failed ? 1 : 0)
