import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { createMemoryHistory } from 'vue-router'
import App from '@/App.vue'
import { EventSocket } from '@/composables/useWebSocket'
import { buildRouter } from '@/router'
import { useHookStore } from '@/stores/hooks'
import { useUserStore } from '@/stores/users'
import { useWebhookStore } from '@/stores/webhooks'
import HooksView from '@/views/HooksView.vue'
import UsersView from '@/views/UsersView.vue'
import WebhooksView from '@/views/WebhooksView.vue'
import { apiError, freshPinia, json, me, mockFetch, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})
const router = () => buildRouter(createMemoryHistory())
const T = '2026-01-01T00:00:00Z'

function hook(id: string, name: string, extra: Record<string, unknown> = {}) {
  return {
    id, name, kind: 'alertmanager', config: { label: 'windflow_service' }, token_prefix: 'wf_hook_abcdefgh', url: '/api/v1/hooks/alertmanager',
    auth: 'token', force: false, dedupe_window: 300, created_by: 'dana', created_at: T, token_rotated_at: null, last_used_at: null, ...extra,
  }
}
function alert(id: number, outcome: string, service = 'api') {
  return { id, hook_id: 'hk_1', received_at: T, request_id: 'r', fingerprint: 'f', service_id: service, status: 'firing', outcome, reason: null, workflow_id: `recover/${service}`, payload: {} }
}
function webhook(id: string, extra: Record<string, unknown> = {}) {
  return { id, url: 'https://receiver.example/h', event_types: null, enabled: true, description: '', created_by: 'dana', created_at: T, updated_at: T, secret_rotated_at: null, ...extra }
}
function delivery(id: string, state: string, extra: Record<string, unknown> = {}) {
  return {
    delivery_id: id, webhook_id: 'wh_1', event_id: 'e1', event_type: 'AUDIT', state, attempts: 1, next_attempt_at: null, last_attempt_at: T,
    last_status_code: state === 'failed' ? 500 : 204, last_error: state === 'failed' ? 'HTTP 500' : null, last_duration_ms: 12, delivered_at: null,
    created_at: T, redelivery_of: null, payload: { event_type: 'AUDIT' }, ...extra,
  }
}
function user(username: string, roles: string[], disabled = false) {
  return { username, roles, permissions: [], disabled, created_at: T, updated_at: T, last_login_at: null }
}
const ROLES = [
  { name: 'admin', description: '', builtin: true, permissions: ['users:manage'] },
  { name: 'operator', description: '', builtin: true, permissions: ['services:control'] },
  { name: 'viewer', description: '', builtin: true, permissions: ['services:read'] },
]

describe('hook store', () => {
  it('keeps the token of a new or rotated hook only until dismissed, never in the list', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/hooks': json([hook('hk_1', 'am')]),
      'POST /api/v1/hooks': json({ ...hook('hk_2', 'pager', { kind: 'generic' }), token: 'wf_hook_secret', signing_secret: null }, 201),
      'POST /api/v1/hooks/hk_1/rotate-token': json({ ...hook('hk_1', 'am', { token_prefix: 'wf_hook_new' }), token: 'wf_hook_new_token' }),
      'PATCH /api/v1/hooks/hk_2': (c) => json({ ...hook('hk_2', 'pager', { kind: 'generic' }), ...(c.body as object) }),
      'GET /api/v1/hooks/hk_1/alerts': json([alert(2, 'attached'), alert(1, 'recovery_started')]),
      'DELETE /api/v1/hooks/hk_2': { status: 204 },
    })
    const s = useHookStore()
    await s.fetchHooks()
    await s.createHook({ name: 'pager', kind: 'generic', service_path: '$.svc', auth: 'token', force: false, dedupe_window: 300, label: 'x' })
    expect(s.revealed?.token).toBe('wf_hook_secret')
    expect(s.hooks.map((h) => h.name)).toEqual(['am', 'pager'])
    expect(s.hooks.some((h) => 'token' in h)).toBe(false)
    await s.updateHook('hk_2', { force: true })
    expect(calls.at(-1)).toMatchObject({ method: 'PATCH', body: { force: true } })
    expect(s.hooks[1].force).toBe(true)
    await s.rotateToken('hk_1')
    expect(s.revealed?.token).toBe('wf_hook_new_token')
    expect(s.hooks[0].token_prefix).toBe('wf_hook_new')
    await s.fetchAlerts('hk_1')
    expect(s.alerts.hk_1.map((a) => a.outcome)).toEqual(['attached', 'recovery_started'])
    s.dismissSecret()
    expect(s.revealed).toBeNull()
    await s.deleteHook('hk_2')
    expect(s.hooks.map((h) => h.id)).toEqual(['hk_1'])
  })
})

describe('webhook store', () => {
  it('pages the delivery log, puts a redelivery or ping first, keeps the secret out of the list', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/webhooks': json([webhook('wh_1')]),
      'POST /api/v1/webhooks': json({ ...webhook('wh_2'), secret: 'whsec_abc' }, 201),
      'GET /api/v1/webhooks/wh_1/deliveries': (c) =>
        json(c.url.includes('cursor=') ? { items: [delivery('d0', 'delivered')], next_cursor: null } : { items: [delivery('d2', 'failed'), delivery('d1', 'delivered')], next_cursor: 'c1' }),
      'POST /api/v1/webhooks/wh_1/deliveries/d2/redeliver': json(delivery('d3', 'pending', { redelivery_of: 'd2' }), 202),
      'POST /api/v1/webhooks/wh_1/ping': json(delivery('d4', 'delivered', { event_type: 'PING' })),
      'PATCH /api/v1/webhooks/wh_1': (c) => json(webhook('wh_1', c.body as Record<string, unknown>)),
      'DELETE /api/v1/webhooks/wh_2': { status: 204 },
    })
    const s = useWebhookStore()
    await s.fetchWebhooks()
    await s.createWebhook({ url: 'https://x.example/h', enabled: true, description: '' })
    expect(s.revealed?.secret).toBe('whsec_abc')
    expect(s.webhooks.some((w) => 'secret' in w)).toBe(false)
    await s.fetchDeliveries('wh_1', { state: 'failed' })
    expect(calls.at(-1)?.url).toContain('state=failed')
    expect(s.cursors.wh_1).toBe('c1')
    await s.fetchDeliveries('wh_1', { more: true })
    expect(calls.at(-1)?.url).toContain('cursor=c1')
    expect(s.deliveries.wh_1.map((d) => d.delivery_id)).toEqual(['d2', 'd1', 'd0'])
    await s.redeliver('wh_1', 'd2')
    await s.ping('wh_1')
    expect(s.deliveries.wh_1.map((d) => d.delivery_id)).toEqual(['d4', 'd3', 'd2', 'd1', 'd0'])
    await s.updateWebhook('wh_1', { enabled: false })
    expect(s.webhooks[0].enabled).toBe(false)
    await s.deleteWebhook('wh_2')
    expect(s.revealed).toBeNull()
    expect(s.webhooks.map((w) => w.id)).toEqual(['wh_1'])
  })
})

describe('user store', () => {
  it('creates, changes roles, disables, resets a password and deletes through PATCH/POST/DELETE', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/users': json({ items: [user('admin', ['admin'])], next_cursor: null }),
      'GET /api/v1/roles': json(ROLES),
      'POST /api/v1/users': (c) => json(user((c.body as { username: string }).username, (c.body as { roles: string[] }).roles), 201),
      'PATCH /api/v1/users/vera': (c) => {
        const b = c.body as { roles?: string[]; disabled?: boolean }
        return json(user('vera', b.roles ?? ['viewer'], b.disabled ?? false))
      },
      'DELETE /api/v1/users/vera': { status: 204 },
    })
    const s = useUserStore()
    await Promise.all([s.fetchUsers(), s.fetchRoles()])
    expect(s.roles.map((r) => r.name)).toEqual(['admin', 'operator', 'viewer'])
    await s.createUser({ username: 'vera', password: 'long-enough-pw', roles: ['viewer'], disabled: false })
    await s.setRoles('vera', ['operator'])
    expect(s.users.find((u) => u.username === 'vera')?.roles).toEqual(['operator'])
    await s.setDisabled('vera', true)
    expect(s.users.find((u) => u.username === 'vera')?.disabled).toBe(true)
    await s.resetPassword('vera', 'another-password')
    expect(calls.at(-1)).toMatchObject({ method: 'PATCH', body: { password: 'another-password' } })
    await s.deleteUser('vera')
    expect(s.users.map((u) => u.username)).toEqual(['admin'])
  })
})

describe('HooksView', () => {
  it('lists hooks, shows the last alerts, creates a generic hook (token shown once), edits and deletes', async () => {
    signedIn(['recovery:trigger'])
    let hooks = [hook('hk_1', 'am', { last_used_at: T })]
    const { calls } = mockFetch({
      'GET /api/v1/hooks': () => json(hooks),
      'GET /api/v1/hooks/hk_1/alerts': json([alert(1, 'recovery_started')]),
      'GET /api/v1/hooks/hk_2/alerts': json([]),
      'POST /api/v1/hooks': (c) => {
        const created = { ...hook('hk_2', (c.body as { name: string }).name, { kind: 'generic', config: { service_path: '$.svc' } }), token: 'wf_hook_once' }
        hooks = [...hooks, created]
        return json(created, 201)
      },
      'PATCH /api/v1/hooks/hk_2': (c) => json(hook('hk_2', (c.body as { name: string }).name, { kind: 'generic', config: { service_path: (c.body as { service_path: string }).service_path } })),
      'DELETE /api/v1/hooks/hk_2': { status: 204 },
    })
    const wrapper = mount(HooksView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    expect(wrapper.findAll('[data-testid="hooks-table"] tr[data-hook]').map((r) => r.attributes('data-hook'))).toEqual(['am'])
    await wrapper.find('tr[data-hook="am"] a').trigger('click')
    await flushPromises()
    expect(wrapper.find('[data-testid="hook-alerts"] tr[data-outcome="recovery_started"]').text()).toContain('recover/api')

    await wrapper.find('[data-testid="hook-new"]').trigger('click')
    await wrapper.find('[data-testid="hook-name"]').setValue('pager')
    await wrapper.find('[data-testid="hook-kind"]').setValue('generic')
    await wrapper.find('[data-testid="hook-service-path"]').setValue('$.svc')
    await wrapper.find('[data-testid="hook-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'POST')?.body).toMatchObject({ name: 'pager', kind: 'generic', service_path: '$.svc', firing_values: ['firing'] })
    expect(wrapper.find('[data-testid="secret-token"]').text()).toBe('wf_hook_once')
    await wrapper.find('[data-testid="secret-dismiss"]').trigger('click')
    expect(wrapper.find('[data-testid="secret-reveal"]').exists()).toBe(false)

    await wrapper.find('[data-testid="hook-edit"]').trigger('click')
    await wrapper.find('[data-testid="hook-edit-service-path"]').setValue('$.alert.svc')
    await wrapper.find('[data-testid="hook-edit-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'PATCH')?.body).toMatchObject({ name: 'pager', service_path: '$.alert.svc' })
    expect(wrapper.find('tr[data-hook="pager"]').text()).toContain('$.alert.svc')

    await wrapper.find('[data-testid="hook-delete-pager"]').trigger('click')
    await wrapper.find('[data-testid="confirm-ok"]').trigger('click')
    await flushPromises()
    expect(wrapper.find('tr[data-hook="pager"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="hook-detail"]').exists()).toBe(false)
  })

  it('shows an API refusal as an error and keeps the form', async () => {
    signedIn(['recovery:trigger'])
    mockFetch({ 'GET /api/v1/hooks': json([]), 'POST /api/v1/hooks': apiError(409, 'conflict', "a hook named 'am' exists") })
    const wrapper = mount(HooksView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    await wrapper.find('[data-testid="hook-new"]').trigger('click')
    await wrapper.find('[data-testid="hook-name"]').setValue('am')
    await wrapper.find('[data-testid="hook-form"]').trigger('submit')
    await flushPromises()
    expect(wrapper.find('[data-testid="hook-form"]').exists()).toBe(true)
    expect(wrapper.find('[data-testid="secret-reveal"]').exists()).toBe(false)
    expect((await import('@/stores/notifications')).useNotificationStore().errors[0].message).toContain('exists')
  })
})

describe('WebhooksView', () => {
  it('shows the delivery log, redelivers a failed delivery and edits the subscription', async () => {
    signedIn(['webhooks:manage'])
    const { calls } = mockFetch({
      'GET /api/v1/webhooks': json([webhook('wh_1')]),
      'GET /api/v1/webhooks/wh_1/deliveries': json({ items: [delivery('d1', 'failed')], next_cursor: null }),
      'POST /api/v1/webhooks/wh_1/deliveries/d1/redeliver': json(delivery('d2', 'pending', { redelivery_of: 'd1', attempts: 0 }), 202),
      'PATCH /api/v1/webhooks/wh_1': (c) => json(webhook('wh_1', c.body as Record<string, unknown>)),
    })
    const wrapper = mount(WebhooksView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    await wrapper.find('tr[data-webhook="wh_1"] a').trigger('click')
    await flushPromises()
    const failed = wrapper.find('tr[data-delivery="d1"]')
    expect(failed.attributes('data-state')).toBe('failed')
    expect(failed.text()).toContain('HTTP 500')
    await failed.find('[data-testid="redeliver"]').trigger('click')
    await flushPromises()
    expect(wrapper.findAll('[data-testid="deliveries"] tr[data-delivery]').map((r) => r.attributes('data-delivery'))).toEqual(['d2', 'd1'])
    expect(wrapper.find('tr[data-delivery="d2"]').text()).toContain('redelivery of d1')

    await wrapper.find('[data-testid="webhook-edit"]').trigger('click')
    await wrapper.find('[data-testid="webhook-edit-description"]').setValue('pager bridge')
    await wrapper.find('[data-testid="webhook-edit-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'PATCH')?.body).toMatchObject({ description: 'pager bridge', event_types: null })
    expect(wrapper.find('tr[data-webhook="wh_1"]').text()).toContain('pager bridge')
  })
})

describe('UsersView', () => {
  it('creates a user, changes roles, disables and resets a password', async () => {
    signedIn(['users:manage'])
    const { calls } = mockFetch({
      'GET /api/v1/users': json({ items: [user('admin', ['admin']), user('vera', ['viewer'])], next_cursor: null }),
      'GET /api/v1/roles': json(ROLES),
      'POST /api/v1/users': (c) => json(user((c.body as { username: string }).username, (c.body as { roles: string[] }).roles), 201),
      'PATCH /api/v1/users/vera': (c) => {
        const b = c.body as { roles?: string[]; disabled?: boolean }
        return json(user('vera', b.roles ?? ['operator'], b.disabled ?? false))
      },
    })
    const wrapper = mount(UsersView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    expect(wrapper.findAll('tr[data-user]').map((r) => r.attributes('data-user'))).toEqual(['admin', 'vera'])

    await wrapper.find('[data-testid="role-vera-operator"]').setValue(true)
    await wrapper.find('[data-testid="role-vera-viewer"]').setValue(false)
    await wrapper.find('[data-testid="roles-save-vera"]').trigger('click')
    await flushPromises()
    expect(calls.find((c) => c.method === 'PATCH')?.body).toEqual({ roles: ['operator'] })
    expect(wrapper.find('[data-testid="roles-save-vera"]').exists()).toBe(false)

    await wrapper.find('[data-testid="user-toggle-vera"]').trigger('click')
    await flushPromises()
    expect(wrapper.find('[data-testid="user-state-vera"]').text()).toBe('disabled')

    await wrapper.find('[data-testid="user-reset-vera"]').trigger('click')
    await wrapper.find('[data-testid="user-new-password"]').setValue('a-new-password')
    await wrapper.find('[data-testid="confirm-ok"]').trigger('click')
    await flushPromises()
    expect(calls.filter((c) => c.method === 'PATCH').at(-1)?.body).toEqual({ password: 'a-new-password' })

    await wrapper.find('[data-testid="user-new"]').trigger('click')
    await wrapper.find('[data-testid="user-username"]').setValue('olga')
    await wrapper.find('[data-testid="user-password"]').setValue('olga-password')
    await wrapper.find('[data-testid="user-role-operator"]').setValue(true)
    await wrapper.find('[data-testid="user-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({ username: 'olga', password: 'olga-password', roles: ['viewer', 'operator'], disabled: false })
    expect(wrapper.findAll('tr[data-user]').map((r) => r.attributes('data-user'))).toEqual(['admin', 'olga', 'vera'])
  })
})

describe('navigation', () => {
  async function navFor(perms: string[], roles: string[]) {
    signedIn(perms)
    vi.spyOn(EventSocket.prototype, 'start').mockImplementation(() => undefined)
    vi.spyOn(EventSocket.prototype, 'stop').mockImplementation(() => undefined)
    mockFetch({
      'GET /api/v1/services': json({ items: [], next_cursor: null }),
      'GET /api/v1/auth/me': json(me(perms, roles)),
      'GET /api/v1/ui-config': json({ version: '1', temporal_ui_url: null, temporal_namespace: 'default', access_token_ttl: 900 }),
      'GET /api/v1/schedules': json([]),
    })
    const r = router()
    await r.push('/schedules')
    const wrapper = mount(App, { global: { plugins: [pinia, r] } })
    await flushPromises()
    return { wrapper, r }
  }

  it('a viewer sees no hooks, webhooks or users entry and is refused the pages', async () => {
    const { wrapper, r } = await navFor(['services:read', 'configs:read'], ['viewer'])
    for (const id of ['nav-hooks', 'nav-webhooks', 'nav-users']) expect(wrapper.find(`[data-testid="${id}"]`).exists()).toBe(false)
    await r.push('/users')
    expect(r.currentRoute.value.query.forbidden).toBe('users:manage')
    await r.push('/webhooks')
    expect(r.currentRoute.value.query.forbidden).toBe('webhooks:manage')
    wrapper.unmount()
  })

  it('an admin sees them all', async () => {
    const { wrapper } = await navFor(['services:read', 'recovery:trigger', 'webhooks:manage', 'users:manage'], ['admin'])
    expect(wrapper.find('[data-testid="nav-hooks"]').attributes('href')).toBe('/hooks')
    expect(wrapper.find('[data-testid="nav-webhooks"]').attributes('href')).toBe('/webhooks')
    expect(wrapper.find('[data-testid="nav-users"]').attributes('href')).toBe('/users')
    wrapper.unmount()
  })
})

describe('WebhooksView polling', () => {
  it('refreshes the log while a delivery is pending, and stops once none is', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true })
    signedIn(['webhooks:manage'])
    let state = 'pending'
    const { calls } = mockFetch({
      'GET /api/v1/webhooks': json([webhook('wh_1')]),
      'GET /api/v1/webhooks/wh_1/deliveries': () => json({ items: [delivery('d1', state)], next_cursor: null }),
    })
    const wrapper = mount(WebhooksView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    await wrapper.find('tr[data-webhook="wh_1"] a').trigger('click')
    await flushPromises()
    const logCalls = () => calls.filter((c) => c.path.endsWith('/deliveries')).length
    expect(logCalls()).toBe(1)
    await vi.advanceTimersByTimeAsync(1600)
    expect(logCalls()).toBe(2)
    state = 'delivered'
    await vi.advanceTimersByTimeAsync(1600)
    await flushPromises()
    expect(wrapper.find('tr[data-delivery="d1"]').attributes('data-state')).toBe('delivered')
    const settled = logCalls()
    await vi.advanceTimersByTimeAsync(5000)
    expect(logCalls()).toBe(settled)
    wrapper.unmount()
    vi.useRealTimers()
  })
})
