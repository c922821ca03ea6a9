import { beforeEach, describe, expect, it } from 'vitest'
import { useAuthStore } from '@/stores/auth'
import { healthOf, useServiceStore } from '@/stores/services'
import { freshPinia, json, mockFetch, service } from './helpers'

beforeEach(() => {
  freshPinia()
  useAuthStore().token = 't'
})

describe('services store', () => {
  it('fetches every page of services', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/services': (c) =>
        c.url.includes('cursor=p2')
          ? json({ items: [service('db')], next_cursor: null })
          : json({ items: [service('api', 'failed', ['db']), service('cache', 'starting')], next_cursor: 'p2' }),
    })
    const store = useServiceStore()
    await store.fetchServices()
    expect(calls).toHaveLength(2)
    expect(store.list.map((s) => s.id)).toEqual(['api', 'cache', 'db'])
    expect(store.loaded).toBe(true)
    expect(store.runningServices.map((s) => s.id)).toEqual(['cache', 'db'])
    expect(store.failedServices.map((s) => s.id)).toEqual(['api'])
    expect(store.serviceHealth('api')).toBe('FAILED')
    expect(store.serviceHealth('db')).toBe('HEALTHY')
    expect(store.serviceHealth('nope')).toBe('UNKNOWN')
  })

  it('maps states to health', () => {
    expect(healthOf('backing_off')).toBe('FAILED')
    expect(healthOf('recovering')).toBe('FAILED')
    expect(healthOf('blocked')).toBe('DEGRADED')
    expect(healthOf('gave_up')).toBe('FAILED')
    expect(healthOf('stopped')).toBe('STOPPED')
    expect(healthOf(undefined)).toBe('UNKNOWN')
  })

  it('controls a service: actions and recoveries', async () => {
    const { calls } = mockFetch({
      'POST /api/v1/services/api/actions': json({ service_id: 'api', action: 'restart', ok: true, message: 'accepted' }, 202),
      'POST /api/v1/services/api/recoveries': json({ service_id: 'api', workflow_id: 'recover/api', run_id: 'x', attached: false, supervised: true }, 202),
    })
    const store = useServiceStore()
    await store.controlService('api', 'restart')
    await store.controlService('api', 'recover', { reason: 'flaky' })
    expect(calls[0].body).toEqual({ action: 'restart', wait: false })
    expect(calls[1].body).toEqual({ reason: 'flaky' })
  })

  it('applies status updates and keeps the transitions', async () => {
    mockFetch({ 'GET /api/v1/services': json({ items: [service('api')], next_cursor: null }) })
    const store = useServiceStore()
    await store.fetchServices()
    store.updateServiceStatus('api', { service_id: 'api', state: 'failed', previous_state: 'healthy', pid: null, message: 'exited -9', source: 'supervisor' })
    store.updateServiceStatus('api', { service_id: 'api', state: 'recovering', message: 'restarting', source: 'recovery' })
    store.updateServiceStatus('api', { service_id: 'api', state: 'healthy', pid: 4242, message: 'recovered', source: 'recovery' })
    expect(store.services.api.state).toBe('healthy')
    expect(store.services.api.state_detail.pid).toBe(4242)
    expect(store.transitions.api.map((t) => t.state)).toEqual(['healthy', 'recovering', 'failed'])
    expect(store.transitions.api[2].previous).toBe('healthy')
  })

  it('fetches an unknown service when an update names it', async () => {
    const { calls } = mockFetch({ 'GET /api/v1/services/new': json(service('new', 'starting')) })
    const store = useServiceStore()
    store.updateServiceStatus('new', { service_id: 'new', state: 'starting' })
    await new Promise((r) => setTimeout(r, 0))
    expect(calls[0].path).toBe('/api/v1/services/new')
    expect(store.services.new.state).toBe('starting')
  })

  it('loads health checks oldest first and appends live ones', async () => {
    mockFetch({
      'GET /api/v1/services/api/health-checks': json([
        { healthy: true, latency_ms: 2, message: '', checked_at: '2026-01-01T00:00:02Z' },
        { healthy: false, latency_ms: 9, message: 'refused', checked_at: '2026-01-01T00:00:01Z' },
      ]),
    })
    const store = useServiceStore()
    await store.updateHealthChecks('api')
    expect(store.healthChecks.api.map((p) => p.latency_ms)).toEqual([9, 2])
    store.addHealthCheck({ service_id: 'api', healthy: true, latency_ms: 3, message: '', checked_at: '2026-01-01T00:00:03Z', verdict: null })
    store.addHealthCheck({ service_id: 'api', healthy: true, latency_ms: 3, message: '', checked_at: '2026-01-01T00:00:03Z', verdict: null })
    expect(store.healthChecks.api).toHaveLength(3)
  })

  it('loads metrics, recoveries, and refreshes recoveries when one ends', async () => {
    let recoveryCalls = 0
    mockFetch({
      'GET /api/v1/services/api/metrics': json({ service_id: 'api', state: 'healthy', restarts_total: 2, restarts_1h: 1, restarts_24h: 2, recoveries_24h: 1 }),
      'GET /api/v1/services/api/recoveries': () => {
        recoveryCalls += 1
        return json({ items: [{ run_id: 'x', workflow_id: 'recover/api', service_id: 'api', status: 'recovered', started_at: '2026-01-01T00:00:00Z', finished_at: null, summary: {} }], next_cursor: null })
      },
    })
    const store = useServiceStore()
    await store.fetchMetrics('api')
    await store.fetchRecoveries('api')
    expect(store.metrics.api.restarts_total).toBe(2)
    expect(store.recoveries.api).toHaveLength(1)
    store.updateRecovery({ service_id: 'api', workflow_id: 'recover/api', status: 'recovered', attempt: 1, max_attempts: 5, message: '' })
    await new Promise((r) => setTimeout(r, 0))
    expect(store.liveRecoveries.api.status).toBe('recovered')
    expect(recoveryCalls).toBe(2)
  })
})
