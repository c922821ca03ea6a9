import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { useAuthStore } from '@/stores/auth'
import { useEventStore } from '@/stores/events'
import { useMetricsStore } from '@/stores/metrics'
import { useNotificationStore } from '@/stores/notifications'
import { useUiStore } from '@/stores/ui'
import { freshPinia, json, mockFetch } from './helpers'

beforeEach(() => {
  freshPinia()
})
afterEach(() => vi.useRealTimers())

describe('notifications store', () => {
  it('adds, auto-dismisses all but errors, dismisses by id', () => {
    vi.useFakeTimers()
    const n = useNotificationStore()
    n.add({ type: 'info', message: 'hello' })
    const errorId = n.add({ type: 'error', message: 'boom' })
    expect(n.items.map((i) => i.message)).toEqual(['boom', 'hello'])
    expect(n.unread).toHaveLength(2)
    vi.advanceTimersByTime(7000)
    expect(n.items.map((i) => i.message)).toEqual(['boom'])
    expect(n.errors).toHaveLength(1)
    n.markAllRead()
    expect(n.unread).toHaveLength(0)
    n.dismiss(errorId)
    expect(n.items).toHaveLength(0)
  })
})

describe('metrics store', () => {
  it('keeps the latest figures per service and a bounded history', () => {
    const m = useMetricsStore()
    for (let i = 0; i < 130; i++) {
      m.updateMetrics({ service_id: 'api', health: 'healthy', latency_ms: i, restarts: 2, availability_1h: 1, availability_24h: 1 })
    }
    m.updateMetrics({ service_id: 'db', health: 'healthy', latency_ms: 1, restarts: 1, availability_1h: 0.5, availability_24h: null })
    expect(m.metrics.api.latency_ms).toBe(129)
    expect(m.history.api).toHaveLength(120)
    expect(m.availability).toBeCloseTo(0.75)
    expect(m.totalRestarts).toBe(3)
    m.clear()
    expect(m.availability).toBeNull()
  })
})

describe('events store', () => {
  it('records the feed (not the periodic metrics) and the resume position', () => {
    const e = useEventStore()
    e.record('1-0', { event_id: 'a', event_type: 'METRICS_UPDATE', timestamp: '', data: {} } as never)
    e.record('2-0', { event_id: 'b', event_type: 'AUDIT', timestamp: '', data: {} } as never)
    expect(e.lastEventId).toBe('2-0')
    expect(e.recent.map((i) => i.id)).toEqual(['2-0'])
  })
})

describe('ui store', () => {
  it('builds Temporal Web UI links from the server settings', async () => {
    useAuthStore().token = 't'
    mockFetch({ 'GET /api/v1/ui-config': json({ version: '1', temporal_ui_url: 'http://127.0.0.1:8233', temporal_namespace: 'default', access_token_ttl: 900 }) })
    const ui = useUiStore()
    await ui.load()
    expect(ui.temporalUrl('init/abc')).toBe('http://127.0.0.1:8233/namespaces/default/workflows/init%2Fabc')
  })

  it('no links without a Temporal Web UI', async () => {
    mockFetch({ 'GET /api/v1/ui-config': json({ version: '1', temporal_ui_url: null, temporal_namespace: 'default', access_token_ttl: 900 }) })
    const ui = useUiStore()
    await ui.load()
    expect(ui.temporalUrl('init/abc')).toBeNull()
  })
})
