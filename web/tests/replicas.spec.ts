import { flushPromises, mount } from '@vue/test-utils'
import { createMemoryHistory } from 'vue-router'
import { beforeEach, describe, expect, it } from 'vitest'
import ServiceLogs from '@/components/ServiceLogs.vue'
import TemporalLink from '@/components/TemporalLink.vue'
import { buildRouter } from '@/router'
import ServiceDetailView from '@/views/ServiceDetailView.vue'
import { freshPinia, json, mockFetch, service, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})

const replica = (k: number, state: string, pid: number | null, restarts = 0) => ({
  id: `web/${k}`, index: k, state, pid, desired: 'running', message: state === 'healthy' ? 'healthy' : 'restarting',
  state_changed_at: null, restarts_total: restarts,
})

describe('replicas on the service page', () => {
  it('lists each replica with its state, pid and supervisor, and the ready count', async () => {
    signedIn(['services:read', 'logs:read'])
    mockFetch({
      'GET /api/v1/services/web': json(service('web', 'recovering', [], {
        replicas: 3, min_ready: null, ready: 2, state_detail: { message: '2/3 healthy' },
        replica_list: [replica(0, 'healthy', 101), replica(1, 'recovering', null, 1), replica(2, 'healthy', 103)],
      })),
      'GET /api/v1/services/web/health-checks': json([]),
      'GET /api/v1/services/web/metrics': json({}),
      'GET /api/v1/services/web/recoveries': json({ items: [], next_cursor: null }),
      'GET /api/v1/services/web/logs': json({ service: 'web/0', source: 'file', lines: [] }),
    })
    const router = buildRouter(createMemoryHistory())
    const wrapper = mount(ServiceDetailView, { props: { id: 'web' }, global: { plugins: [pinia, router] } })
    await flushPromises()
    const card = wrapper.find('[data-testid="replicas"]')
    expect(card.exists()).toBe(true)
    expect(card.find('[data-testid="replicas-ready"]').text()).toBe('2/3 ready')
    const rows = card.findAll('tr[data-replica]')
    expect(rows.map((r) => r.attributes('data-replica'))).toEqual(['web/0', 'web/1', 'web/2'])
    expect(rows[1].text()).toContain('recovering')
    expect(rows[0].text()).toContain('101')
    expect(rows[1].findComponent(TemporalLink).props('workflowId')).toBe('supervise/web/1')
    wrapper.unmount()
  })

  it('has no replicas card for a plain service', async () => {
    signedIn(['services:read'])
    mockFetch({
      'GET /api/v1/services/db': json(service('db')),
      'GET /api/v1/services/db/health-checks': json([]),
      'GET /api/v1/services/db/metrics': json({}),
      'GET /api/v1/services/db/recoveries': json({ items: [], next_cursor: null }),
    })
    const wrapper = mount(ServiceDetailView, { props: { id: 'db' }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="replicas"]').exists()).toBe(false)
    wrapper.unmount()
  })
})

describe('ServiceLogs of a replicated service', () => {
  it('asks for one replica at a time, chosen in the panel', async () => {
    signedIn(['services:read', 'logs:read'])
    const { calls } = mockFetch({
      'GET /api/v1/services/web/logs': json({ service: 'web', source: 'file', lines: [] }),
    })
    const wrapper = mount(ServiceLogs, { props: { serviceId: 'web', replicas: 3 }, global: { plugins: [pinia] } })
    await flushPromises()
    const query = () => new URL(calls[calls.length - 1].url, 'http://localhost').searchParams
    expect(query().get('replica')).toBe('0')
    const options = wrapper.findAll('[data-testid="logs-replica"] option').map((o) => o.text())
    expect(options).toEqual(['web/0', 'web/1', 'web/2'])
    const select = wrapper.find('[data-testid="logs-replica"]')
    ;(select.element as HTMLSelectElement).selectedIndex = 2
    await select.trigger('change')
    await flushPromises()
    expect(query().get('replica')).toBe('2')
    wrapper.unmount()
  })

  it('sends no replica for a plain service', async () => {
    signedIn(['services:read', 'logs:read'])
    const { calls } = mockFetch({ 'GET /api/v1/services/db/logs': json({ service: 'db', source: 'file', lines: [] }) })
    const wrapper = mount(ServiceLogs, { props: { serviceId: 'db' }, global: { plugins: [pinia] } })
    await flushPromises()
    expect(new URL(calls[0].url, 'http://localhost').searchParams.has('replica')).toBe(false)
    expect(wrapper.find('[data-testid="logs-replica"]').exists()).toBe(false)
    wrapper.unmount()
  })
})
