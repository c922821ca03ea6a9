import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { createMemoryHistory } from 'vue-router'
import RolloutPanel from '@/components/RolloutPanel.vue'
import { dispatchEvent } from '@/composables/useWebSocket'
import { buildRouter } from '@/router'
import { rolloutRunning, useRolloutStore } from '@/stores/rollouts'
import ConfigsView from '@/views/ConfigsView.vue'
import { freshPinia, json, mockFetch, service, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})

function rollout(id: string, status: string, extra: Record<string, unknown> = {}) {
  return {
    rollout_id: id, service_id: 'api', workflow_id: 'rollout/api', status, phase: 'verifying', progress: 60,
    actor: 'admin', comment: 'bump', verify_window: 10, message: '', previous_version: 1, good_version: 1,
    new_version: 2, restored_version: null, live: true, state: null, started_at: '2026-01-01T00:00:00Z',
    finished_at: null, links: { self: '', cancel: '', temporal_ui: null }, ...extra,
  }
}

describe('rollout store', () => {
  it('lists, follows one rollout and cancels it', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/services/api/rollouts': json({ items: [rollout('r1', 'RUNNING'), rollout('r0', 'SUCCEEDED')], next_cursor: null }),
      'GET /api/v1/services/api/rollouts/r1': json(rollout('r1', 'ROLLED_BACK', { restored_version: 1, phase: 'done' })),
      'POST /api/v1/services/api/rollouts/r1/cancel': json({ status: 'cancelling' }, 202),
    })
    const store = useRolloutStore()
    await store.fetchRollouts('api')
    expect(rolloutRunning(store.latest('api'))).toBe(true)
    await store.cancelRollout('api', 'r1')
    await store.fetchRollout('api', 'r1')
    expect(store.latest('api')?.status).toBe('ROLLED_BACK')
    expect(store.byService.api.map((r) => r.rollout_id)).toEqual(['r1', 'r0'])
    expect(calls.map((c) => `${c.method} ${c.path}`)).toContain('POST /api/v1/services/api/rollouts/r1/cancel')
  })
})

describe('RolloutPanel', () => {
  it('follows a running rollout live until it ends, and offers cancel with roll back', async () => {
    signedIn(['configs:read', 'configs:write'])
    let polled = 0
    const { calls } = mockFetch({
      'GET /api/v1/services/api/rollouts': json({ items: [rollout('r1', 'RUNNING'), rollout('r0', 'SUCCEEDED', { new_version: 1, previous_version: null })], next_cursor: null }),
      'GET /api/v1/services/api/rollouts/r1': () => {
        polled += 1
        return json(polled < 2 ? rollout('r1', 'ROLLING_BACK', { phase: 'restoring' })
          : rollout('r1', 'ROLLED_BACK', { phase: 'done', progress: 100, restored_version: 1, message: 'api failed its health check' }))
      },
      'POST /api/v1/services/api/rollouts/r1/cancel': json({ status: 'cancelling' }, 202),
    })
    const wrapper = mount(RolloutPanel, { props: { serviceId: 'api', pollMs: 10 }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="rollout-phase"]').text()).toBe('verifying')
    expect(wrapper.find('[data-testid="rollout-summary"]').text()).toContain('v1 → v2')
    expect(wrapper.find('[data-testid="rollout-progress"]').attributes('aria-valuenow')).toBe('60')
    expect(wrapper.findAll('[data-testid="rollout-history"] tr[data-rollout]')).toHaveLength(1)
    await wrapper.find('[data-testid="rollout-cancel"]').trigger('click')
    // the confirmation, then the cancel request
    await wrapper.find('[data-testid="confirm-ok"]').trigger('click')
    await flushPromises()
    expect(calls.some((c) => c.method === 'POST' && c.path.endsWith('/r1/cancel'))).toBe(true)
    await vi.waitFor(() => expect(wrapper.find('[data-testid="rollout-progress"]').attributes('data-tone')).toBe('failed'))
    expect(wrapper.find('[data-testid="rollout-summary"]').text()).toContain('restored v1')
    expect(wrapper.find('[data-testid="rollout-message"]').text()).toBe('api failed its health check')
    expect(wrapper.find('[data-testid="rollout-cancel"]').exists()).toBe(false) // ended: nothing to cancel
    const after = polled
    await new Promise((r) => setTimeout(r, 50))
    expect(polled).toBe(after) // no polling once it ended
    wrapper.unmount()
  })

  it('a reader sees the rollouts but no cancel', async () => {
    signedIn(['configs:read'])
    mockFetch({ 'GET /api/v1/services/api/rollouts': json({ items: [rollout('r1', 'RUNNING')], next_cursor: null }) })
    const wrapper = mount(RolloutPanel, { props: { serviceId: 'api', pollMs: 100_000 }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="rollout-phase"]').exists()).toBe(true)
    expect(wrapper.find('[data-testid="rollout-cancel"]').exists()).toBe(false)
    wrapper.unmount()
  })
})

describe('config page', () => {
  it('shows the rollout it starts right below the editor, live', async () => {
    signedIn(['services:read', 'configs:read', 'configs:write'])
    const v1 = { service_id: 'api', version: 1, content: { driver: 'process', config: { command: ['a'] } }, content_hash: 'h', author: 'a', comment: '', reverted_from: null, status: 'active', created_at: '2026-01-01T00:00:00Z' }
    const v2 = { ...v1, version: 2, content: { driver: 'process', config: { command: ['b'] } } }
    mockFetch({
      'GET /api/v1/services': json({ items: [service('api', 'healthy', [], { version: 2, applied_version: 1, pending_version: 2 })], next_cursor: null }),
      'GET /api/v1/services/api/config': json(v2),
      'GET /api/v1/services/api/config/versions': json({ items: [v2, v1], next_cursor: null }),
      'GET /api/v1/services/api/rollouts': json({ items: [], next_cursor: null }),
      'POST /api/v1/services/api/rollouts': json(rollout('r7', 'RUNNING', { phase: 'applying' }), 202),
      'GET /api/v1/services/api/rollouts/r7': json(rollout('r7', 'SUCCEEDED', { phase: 'done', progress: 100 })),
    })
    const wrapper = mount(ConfigsView, { props: { id: 'api' }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="rollouts"]').text()).toContain('No rollout yet')
    await wrapper.find('[data-testid="config-apply-pending"]').trigger('click')
    await flushPromises()
    expect(wrapper.find('[data-testid="rollout-summary"]').text()).toContain('v1 → v2')
    await vi.waitFor(() => expect(wrapper.find('[data-testid="rollout-progress"]').attributes('data-tone')).toBe('succeeded'), { timeout: 4000 })
    wrapper.unmount()
  })
})

describe('rollout events', () => {
  it('move a listed rollout on, and fetch one started elsewhere', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/services/api/rollouts': json({ items: [rollout('r1', 'RUNNING')], next_cursor: null }),
      'GET /api/v1/services/api/rollouts/r2': json(rollout('r2', 'RUNNING', { phase: 'saving' })),
    })
    const store = useRolloutStore()
    await store.fetchRollouts('api')
    dispatchEvent({
      event_id: '1-0', event_type: 'ROLLOUT_UPDATE', timestamp: '2026-01-01T00:00:00Z',
      data: { service_id: 'api', workflow_id: 'rollout/api', rollout_id: 'r1', status: 'ROLLING_BACK', phase: 'restoring', message: 'unhealthy' },
    } as never)
    expect(store.latest('api')).toMatchObject({ status: 'ROLLING_BACK', phase: 'restoring', message: 'unhealthy' })
    store.onUpdate({ service_id: 'api', workflow_id: 'rollout/api', rollout_id: 'r2', status: 'RUNNING', phase: 'saving', message: '' })
    await flushPromises()
    expect(store.latest('api')?.rollout_id).toBe('r2')
    // a service nobody is looking at: nothing fetched
    store.onUpdate({ service_id: 'db', workflow_id: 'rollout/db', rollout_id: 'r3', status: 'RUNNING', message: '' })
    await flushPromises()
    expect(calls.some((c) => c.path.includes('/services/db/'))).toBe(false)
  })
})
