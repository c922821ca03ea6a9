import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { createMemoryHistory } from 'vue-router'
import App from '@/App.vue'
import { isServiceId, patternRegExp, SERVICE_ID_PATTERN } from '@/api/ids'
import ProgressBar from '@/components/ProgressBar.vue'
import { progressTone } from '@/components/progress'
import { EventSocket } from '@/composables/useWebSocket'
import { buildRouter } from '@/router'
import { useInitializationStore } from '@/stores/initialization'
import AuditView from '@/views/AuditView.vue'
import ConfigsView from '@/views/ConfigsView.vue'
import InitializationView from '@/views/InitializationView.vue'
import { freshPinia, json, me, mockFetch, service, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})

const router = () => buildRouter(createMemoryHistory())
const empty = { items: [], next_cursor: null }

function runState(status: string, progress: number, validateOnly = false) {
  return {
    run_id: 'r9', workflow_id: 'init/r9', status, progress, actor: 'a', options: { validate_only: validateOnly } as never,
    plan: [['db']], components: { db: { name: 'db', status: 'HEALTHY', layer: 0, depends_on: [], attempts: 1 } },
    problems: [], message: '',
  } as never
}

describe('progress bar tone', () => {
  it('is green only for a run that succeeded', () => {
    expect(progressTone('SUCCEEDED')).toBe('succeeded')
    expect(progressTone('CANCELLED')).toBe('cancelled')
    expect(progressTone('CANCELLING')).toBe('cancelled')
    expect(progressTone('FAILED')).toBe('failed')
    expect(progressTone('RUNNING')).toBe('running')
    expect(progressTone(undefined)).toBe('running')
  })

  it('shows a cancelled run grey at the progress it had reached, saying so', () => {
    const wrapper = mount(ProgressBar, { props: { value: 99, status: 'CANCELLED' } })
    const bar = wrapper.find('[role="progressbar"]')
    expect(bar.attributes('data-tone')).toBe('cancelled')
    expect(bar.classes()).toContain('tone-cancelled')
    expect(bar.classes()).not.toContain('tone-succeeded')
    expect(bar.attributes('aria-valuenow')).toBe('99')
    expect(bar.attributes('aria-valuetext')).toBe('cancelled at 99%')
    expect(wrapper.find('.value').text()).toBe('cancelled at 99%')
  })

  it('the initialization page tones its bar by the run outcome', async () => {
    signedIn(['services:read'])
    mockFetch({ 'GET /api/v1/initializations': json(empty), 'GET /api/v1/services': json(empty) })
    const wrapper = mount(InitializationView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    const init = useInitializationStore()
    init.updateStatus(runState('CANCELLED', 99))
    await flushPromises()
    const bar = wrapper.find('[data-testid="init-progress"]')
    expect(bar.attributes('data-tone')).toBe('cancelled')
    expect(bar.attributes('aria-valuenow')).toBe('99')
    init.updateStatus(runState('FAILED', 40))
    await flushPromises()
    expect(wrapper.find('[data-testid="init-progress"]').attributes('data-tone')).toBe('failed')
    init.updateStatus(runState('SUCCEEDED', 100))
    await flushPromises()
    expect(wrapper.find('[data-testid="init-progress"]').attributes('data-tone')).toBe('succeeded')
  })
})

describe('dry runs', () => {
  it('the run page labels a validate-only run as a dry run', async () => {
    signedIn(['services:read'])
    mockFetch({ 'GET /api/v1/initializations': json(empty), 'GET /api/v1/services': json(empty) })
    const wrapper = mount(InitializationView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    useInitializationStore().updateStatus(runState('SUCCEEDED', 100, true))
    await flushPromises()
    expect(wrapper.find('[data-testid="current-run"] [data-testid="dry-run"]').text()).toBe('dry run')
    useInitializationStore().updateStatus({ ...(runState('SUCCEEDED', 100) as object), run_id: 'r10' } as never)
    await flushPromises()
    expect(wrapper.find('[data-testid="current-run"] [data-testid="dry-run"]').exists()).toBe(false)
  })
})

describe('service id pattern', () => {
  it('compiles as Chromium compiles pattern attributes (v flag), unlike the old one', () => {
    expect(() => patternRegExp('[a-z0-9][a-z0-9_-]*')).toThrow(SyntaxError)
    expect(() => patternRegExp(SERVICE_ID_PATTERN)).not.toThrow()
  })

  it('accepts what the API accepts and rejects the rest', () => {
    for (const ok of ['web', 'web-copy', 'a', 'db_2', 'x'.repeat(64)]) expect(isServiceId(ok), ok).toBe(true)
    for (const bad of ['', 'Web', '-web', 'web-', 'web copy', 'web.copy', 'x'.repeat(65)]) expect(isServiceId(bad), bad).toBe(false)
  })

  it("the template form's id input carries that pattern, and Create checks it before calling the API", async () => {
    signedIn(['services:read', 'configs:read', 'configs:write'])
    const v1 = { service_id: 'api', version: 1, content: {}, content_hash: 'h', author: 'a', comment: '', reverted_from: null, status: 'active', created_at: '2026-01-01T00:00:00Z' }
    const { calls } = mockFetch({
      'GET /api/v1/services': json({ items: [service('api')], next_cursor: null }),
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
      'GET /api/v1/config-templates': json([{ name: 'redis', description: 'Redis', parameters: [], content: {}, builtin: true }]),
    })
    const wrapper = mount(ConfigsView, { props: { id: 'api' }, global: { plugins: [pinia, router()] }, attachTo: document.body })
    await flushPromises()
    await wrapper.find('[data-testid="tab-templates"]').trigger('click')
    await flushPromises()
    const input = wrapper.find('[data-template="redis"] [data-testid="template-id"]')
    const pattern = input.attributes('pattern') as string
    expect(() => patternRegExp(pattern)).not.toThrow()
    expect(patternRegExp(pattern).test('web-copy')).toBe(true)
    await input.setValue('Not An Id')
    expect((input.element as HTMLInputElement).checkValidity()).toBe(false)
    await wrapper.find('[data-template="redis"] [data-testid="template-create"]').trigger('click')
    await flushPromises()
    expect(calls.filter((c) => c.path.includes('/instantiate'))).toHaveLength(0)
    wrapper.unmount()
  })
})

describe('audit table', () => {
  it('lays out fixed columns inside its card so long details wrap', async () => {
    signedIn(['audit:read'])
    const details = { patch: 'x'.repeat(600) }
    mockFetch({
      'GET /api/v1/audit': json({
        items: [{ id: 1, at: '2026-01-01T00:00:00Z', actor: 'admin', action: 'config.update', target: 'service:api', outcome: 'success', details }],
        next_cursor: null,
      }),
    })
    const wrapper = mount(AuditView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    const table = wrapper.find('[data-testid="audit-table"]')
    expect(table.element.parentElement?.classList.contains('card')).toBe(true)
    expect(table.classes()).toContain('audit')
    expect(table.findAll('col')).toHaveLength(6)
    expect(wrapper.find('[data-testid="audit-details"]').text()).toContain('x'.repeat(600))
  })
})

describe('dry runs in the history', () => {
  const row = (run_id: string, validate_only: boolean, status = 'SUCCEEDED', progress = 100) => ({
    run_id, workflow_id: `init/${run_id}`, status, progress, actor: 'admin', live: false, validate_only, state: null,
    started_at: '2026-01-01T00:00:00Z', finished_at: '2026-01-01T00:01:00Z', links: { temporal_ui: null },
  })

  it('marks validate-only runs and tones a cancelled run grey', async () => {
    signedIn(['services:read'])
    mockFetch({
      'GET /api/v1/initializations': json({ items: [row('dry', true), row('real', false, 'CANCELLED', 99)], next_cursor: null }),
      'GET /api/v1/initializations/dry': json(row('dry', true)),
      'GET /api/v1/services': json(empty),
    })
    const wrapper = mount(InitializationView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    expect(wrapper.find('[data-run="dry"] [data-testid="history-dry-run"]').text()).toBe('dry run')
    expect(wrapper.find('[data-run="real"] [data-testid="history-dry-run"]').exists()).toBe(false)
    expect(wrapper.find('[data-run="real"] .progress-text').classes()).toContain('tone-cancelled')
    // the newest run (the dry one) is shown, labelled, even though read from the store without its state
    expect(wrapper.find('[data-testid="current-run"] [data-testid="dry-run"]').exists()).toBe(true)
  })
})

describe('templates page', () => {
  const redis = {
    name: 'redis', description: 'Redis', builtin: true, content: { driver: 'process' },
    parameters: [{ name: 'port', required: false, default: 6379, description: 'port' }],
  }

  it('is in the navigation for whoever may read configs, and lists the templates', async () => {
    const perms = ['services:read', 'configs:read', 'configs:write']
    signedIn(perms)
    vi.spyOn(EventSocket.prototype, 'start').mockImplementation(() => undefined)
    vi.spyOn(EventSocket.prototype, 'stop').mockImplementation(() => undefined)
    const { calls } = mockFetch({
      'GET /api/v1/services': json(empty),
      'GET /api/v1/auth/me': json(me(perms)),
      'GET /api/v1/ui-config': json({ version: '1', temporal_ui_url: null, temporal_namespace: 'default', access_token_ttl: 900 }),
      'GET /api/v1/config-templates': json([redis]),
      'POST /api/v1/config-templates/redis/instantiate': (c) =>
        json({ template: 'redis', service: { id: (c.body as { service_id: string }).service_id, driver: 'process' }, created: true }),
    })
    const r = router()
    await r.push('/configs')
    const wrapper = mount(App, { global: { plugins: [pinia, r] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="configs-templates-link"]').attributes('href')).toBe('/templates')
    expect(wrapper.find('[data-testid="nav-templates"]').attributes('href')).toBe('/templates')
    await wrapper.find('[data-testid="nav-templates"]').trigger('click')
    await vi.waitFor(() => expect(r.currentRoute.value.name).toBe('templates'))
    await vi.waitFor(() => expect(wrapper.find('[data-template="redis"]').exists()).toBe(true))
    const tpl = wrapper.find('[data-template="redis"]')
    expect(tpl.text()).toContain('Redis')
    await tpl.find('[data-testid="template-id"]').setValue('cache-2')
    await tpl.find('form').trigger('submit')
    await flushPromises()
    expect(wrapper.find('[data-testid="template-result"]').text()).toContain('cache-2')
    const preview = calls.find((c) => c.path.endsWith('/instantiate'))
    expect(preview?.body).toMatchObject({ service_id: 'cache-2' })
    wrapper.unmount()
  })

  it('is not offered without configs:read', async () => {
    signedIn(['services:read'])
    const r = router()
    await r.push('/templates')
    expect(r.currentRoute.value.name).toBe('not-found')
    expect(r.currentRoute.value.query.forbidden).toBe('configs:read')
  })
})
