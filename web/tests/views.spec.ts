import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { defineComponent, h } from 'vue'
import { createMemoryHistory } from 'vue-router'
import { EventSocket, useWebSocket } from '@/composables/useWebSocket'
import { buildRouter } from '@/router'
import { useAuthStore } from '@/stores/auth'
import App from '@/App.vue'
import ConfigsView from '@/views/ConfigsView.vue'
import ServicesView from '@/views/ServicesView.vue'
import { freshPinia, json, me, mockFetch, service, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})

describe('router guard', () => {
  it('sends a signed-out visitor to the login page, remembering where they were going', async () => {
    const router = buildRouter(createMemoryHistory())
    await router.push('/services/api')
    expect(router.currentRoute.value.name).toBe('login')
    expect(router.currentRoute.value.query.next).toBe('/services/api')
  })

  it('refuses pages whose permission is missing', async () => {
    signedIn(['services:read'])
    const router = buildRouter(createMemoryHistory())
    await router.push('/audit')
    expect(router.currentRoute.value.name).toBe('not-found')
    expect(router.currentRoute.value.query.forbidden).toBe('audit:read')
    await router.push('/services')
    expect(router.currentRoute.value.name).toBe('services')
  })
})

describe('ServicesView', () => {
  it('lists services and filters them by text and health', async () => {
    signedIn(['services:read'])
    mockFetch({
      'GET /api/v1/services': json({
        items: [service('api', 'healthy', ['db']), service('db', 'recovering'), service('worker', 'stopped')],
        next_cursor: null,
      }),
    })
    const router = buildRouter(createMemoryHistory())
    const wrapper = mount(ServicesView, { global: { plugins: [pinia, router] } })
    await flushPromises()
    const rows = () => wrapper.findAll('tr[data-service]').map((r) => r.attributes('data-service'))
    expect(rows()).toEqual(['api', 'db', 'worker'])
    await wrapper.find('[data-testid="filter-health"]').setValue('FAILED')
    expect(rows()).toEqual(['db'])
    await wrapper.find('[data-testid="filter-health"]').setValue('')
    await wrapper.find('[data-testid="filter-q"]').setValue('work')
    expect(rows()).toEqual(['worker'])
    expect(wrapper.find('[data-testid="action-restart"]').exists()).toBe(false) // a viewer
  })
})

describe('ConfigsView', () => {
  const v1 = { service_id: 'api', version: 1, content: { driver: 'process', config: { command: ['a'] } }, content_hash: 'h', author: 'a', comment: '', reverted_from: null, status: 'active', created_at: '2026-01-01T00:00:00Z' }

  it('shows validation problems inline and keeps Save disabled while invalid', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true })
    signedIn(['services:read', 'configs:read', 'configs:write'])
    mockFetch({
      'GET /api/v1/services': json({ items: [service('api')], next_cursor: null }),
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
      'POST /api/v1/services/api/config/validate': (c) =>
        json((c.body as { content: { driver: string } }).content.driver === 'process'
          ? { valid: true, problems: [] }
          : { valid: false, problems: [{ loc: ['driver'], msg: "unknown driver 'nope'" }] }),
    })
    const router = buildRouter(createMemoryHistory())
    const wrapper = mount(ConfigsView, { props: { id: 'api' }, global: { plugins: [pinia, router] } })
    await flushPromises()
    const editor = wrapper.find('[data-testid="config-editor"]')
    expect(JSON.parse((editor.element as HTMLTextAreaElement).value)).toEqual(v1.content)
    expect(wrapper.find('[data-testid="config-save"]').attributes('disabled')).toBeDefined()

    await editor.setValue('{ not json')
    expect(wrapper.find('[data-testid="config-problems"]').text()).toContain('JSON')

    await editor.setValue(JSON.stringify({ ...v1.content, driver: 'nope' }))
    await vi.advanceTimersByTimeAsync(400)
    await flushPromises()
    expect(wrapper.find('[data-testid="config-problems"]').text()).toContain("driver unknown driver 'nope'")
    expect(wrapper.find('[data-testid="config-save"]').attributes('disabled')).toBeDefined()

    await editor.setValue(JSON.stringify({ ...v1.content, description: 'x' }))
    await vi.advanceTimersByTimeAsync(400)
    await flushPromises()
    expect(wrapper.find('[data-testid="config-valid"]').exists()).toBe(true)
    expect(wrapper.find('[data-testid="config-save"]').attributes('disabled')).toBeUndefined()
    vi.useRealTimers()
  })

  it('shows a saved, pending version and applies it through a rollout; Save and apply is the main action', async () => {
    signedIn(['services:read', 'configs:read', 'configs:write'])
    const v2 = { ...v1, version: 2, content: { driver: 'process', config: { command: ['b'] } } }
    const posted: unknown[] = []
    mockFetch({
      'GET /api/v1/services': json({ items: [service('api', 'healthy', [], { version: 2, applied_version: 1, pending_version: 2 })], next_cursor: null }),
      'GET /api/v1/services/api/config': json(v2),
      'GET /api/v1/services/api/config/versions': json({ items: [v2, v1], next_cursor: null }),
      'POST /api/v1/services/api/rollouts': (c) => {
        posted.push(c.body)
        return json({ rollout_id: 'r1', status: 'RUNNING' }, 202)
      },
    })
    const wrapper = mount(ConfigsView, { props: { id: 'api' }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="config-pending"]').text()).toContain('v2 saved, v1 running')
    expect(wrapper.find('[data-testid="config-apply"]').text()).toBe('Save and apply')
    expect(wrapper.find('[data-testid="config-save"]').text()).toBe('Save only')
    await wrapper.find('[data-testid="config-apply-pending"]').trigger('click')
    await flushPromises()
    expect(posted).toEqual([{ config: v2.content, comment: 'apply v2', expected_version: 2 }])
  })

  it('is read-only without configs:write', async () => {
    signedIn(['services:read', 'configs:read'])
    mockFetch({
      'GET /api/v1/services': json({ items: [service('api')], next_cursor: null }),
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
    })
    const wrapper = mount(ConfigsView, { props: { id: 'api' }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="config-editor"]').attributes('readonly')).toBeDefined()
    expect(wrapper.text()).toContain('read-only')
  })
})

describe('App', () => {
  it('goes back to the login page when the session ends under it', async () => {
    signedIn(['services:read'])
    vi.spyOn(EventSocket.prototype, 'start').mockImplementation(() => undefined)
    vi.spyOn(EventSocket.prototype, 'stop').mockImplementation(() => undefined)
    mockFetch({
      'GET /api/v1/services': json({ items: [service('api')], next_cursor: null }),
      'GET /api/v1/auth/me': json(me(['services:read'])),
      'GET /api/v1/ui-config': json({ version: '1', temporal_ui_url: null, temporal_namespace: 'default', access_token_ttl: 900 }),
    })
    const router = buildRouter(createMemoryHistory())
    await router.push('/services')
    const wrapper = mount(App, { global: { plugins: [pinia, router] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="services-table"]').exists()).toBe(true)
    useAuthStore().clearSession() // e.g. the refresh token was refused
    await flushPromises()
    expect(router.currentRoute.value.name).toBe('login')
    expect(router.currentRoute.value.query.next).toBe('/services')
    expect(wrapper.find('[data-testid="login-form"]').exists()).toBe(true)
  })
})

describe('useWebSocket', () => {
  it('connects while the component is mounted and closes when it goes', () => {
    signedIn(['services:read'])
    const start = vi.spyOn(EventSocket.prototype, 'start').mockImplementation(() => undefined)
    const stop = vi.spyOn(EventSocket.prototype, 'stop').mockImplementation(() => undefined)
    const Shell = defineComponent({
      setup() {
        useWebSocket()
        return () => h('div')
      },
    })
    const wrapper = mount(Shell, { global: { plugins: [pinia] } })
    expect(start).toHaveBeenCalledTimes(1)
    wrapper.unmount()
    expect(stop).toHaveBeenCalledTimes(1)
  })
})
