import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { EventSocket, isAfter } from '@/composables/useWebSocket'
import { useAuthStore } from '@/stores/auth'
import { useConfigStore } from '@/stores/config'
import { useEventStore } from '@/stores/events'
import { useInitializationStore } from '@/stores/initialization'
import { useMetricsStore } from '@/stores/metrics'
import { useNotificationStore } from '@/stores/notifications'
import { useServiceStore } from '@/stores/services'
import { freshPinia, json, mockFetch, service, tokenPair } from './helpers'

class FakeWebSocket {
  static instances: FakeWebSocket[] = []
  url: string
  sent: string[] = []
  closed: { code?: number; reason?: string } | null = null
  onopen: ((e: Event) => void) | null = null
  onmessage: ((e: MessageEvent) => void) | null = null
  onclose: ((e: CloseEvent) => void) | null = null
  onerror: ((e: Event) => void) | null = null

  constructor(url: string) {
    this.url = url
    FakeWebSocket.instances.push(this)
  }
  send(data: string) {
    this.sent.push(data)
  }
  close(code?: number, reason?: string) {
    this.closed = { code, reason }
  }
  // server side
  open() {
    this.onopen?.(new Event('open'))
  }
  receive(body: unknown) {
    this.onmessage?.({ data: JSON.stringify(body) } as MessageEvent)
  }
  serverClose(code: number, reason = '') {
    this.onclose?.({ code, reason } as CloseEvent)
  }
  static last(): FakeWebSocket {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1]
  }
}

let seq = 0
function event(type: string, data: Record<string, unknown>, id = `${1000 + ++seq}-0`) {
  return { type: 'event', id, event: { event_id: `e${seq}`, event_type: type, timestamp: '2026-01-01T00:00:00Z', data } }
}

function makeSocket() {
  return new EventSocket({ url: 'ws://test/api/v1/ws', WebSocketImpl: FakeWebSocket as unknown as typeof WebSocket, baseDelay: 100, maxDelay: 1000, random: () => 1 })
}

beforeEach(() => {
  freshPinia()
  FakeWebSocket.instances = []
  useAuthStore().token = 'tok'
  useAuthStore().refreshTokenValue = 'r1'
})
afterEach(() => vi.useRealTimers())

describe('event socket', () => {
  it('authenticates with its first message and reports the connection', () => {
    const socket = makeSocket()
    socket.start()
    const ws = FakeWebSocket.last()
    expect(ws.url).toBe('ws://test/api/v1/ws')
    expect(useEventStore().connection).toBe('connecting')
    ws.open()
    expect(JSON.parse(ws.sent[0])).toEqual({ type: 'auth', token: 'tok' })
    ws.receive({ type: 'subscribed', types: null, services: null, position: '0-0' })
    expect(useEventStore().connection).toBe('open')
    ws.receive({ type: 'ping', ts: 'x' })
    expect(JSON.parse(ws.sent[1])).toEqual({ type: 'pong' })
    socket.stop()
    expect(ws.closed?.code).toBe(1000)
  })

  it('dispatches every event type to its store', async () => {
    mockFetch({
      'GET /api/v1/services': json({ items: [service('api'), service('db')], next_cursor: null }),
      'GET /api/v1/initializations/r1': json({}), // the store fetches the run it first hears of
      'GET /api/v1/initializations': json({ items: [], next_cursor: null }),
    })
    const services = useServiceStore()
    await services.fetchServices()
    const socket = makeSocket()
    socket.start()
    const ws = FakeWebSocket.last()
    ws.open()
    ws.receive(event('INITIALIZATION_UPDATE', { run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 40, component: 'db', component_status: 'HEALTHY', message: '' }))
    ws.receive(event('SERVICE_STATUS_UPDATE', { service_id: 'api', state: 'failed', previous_state: 'healthy', pid: null, message: 'exited', source: 'supervisor' }))
    ws.receive(event('HEALTH_CHECK', { service_id: 'db', healthy: true, latency_ms: 1.5, message: '', checked_at: '2026-01-01T00:00:01Z', verdict: null }))
    ws.receive(event('METRICS_UPDATE', { service_id: 'db', health: 'healthy', latency_ms: 1.5, restarts: 0, availability_1h: 1, availability_24h: 1 }))
    ws.receive(event('RECOVERY_UPDATE', { service_id: 'api', workflow_id: 'recover/api', status: 'running', attempt: 1, max_attempts: 5, message: '' }))
    const init = useInitializationStore()
    expect(init.runId).toBe('r1')
    expect(init.progress).toBe(40)
    expect(init.components.db.status).toBe('HEALTHY')
    expect(services.services.api.state).toBe('failed')
    expect(services.serviceHealth('api')).toBe('FAILED')
    expect(services.healthChecks.db[0].latency_ms).toBe(1.5)
    expect(useMetricsStore().metrics.db.availability_1h).toBe(1)
    expect(services.liveRecoveries.api.attempt).toBe(1)
    expect(useNotificationStore().items.some((n) => n.type === 'error' && n.message.includes('api'))).toBe(true)
    expect(useEventStore().recent).toHaveLength(4) // metrics are not in the feed
    socket.stop()
  })

  it('says blocked, clears the red toast and the pid when a service recovers', async () => {
    mockFetch({ 'GET /api/v1/services': json({ items: [service('api')], next_cursor: null }) })
    const services = useServiceStore()
    await services.fetchServices()
    const notes = useNotificationStore()
    const socket = makeSocket()
    socket.start()
    const ws = FakeWebSocket.last()
    ws.open()
    ws.receive(event('SERVICE_STATUS_UPDATE', { service_id: 'api', state: 'recovering', previous_state: 'healthy', pid: null, message: 'exited', source: 'supervisor' }))
    expect(notes.items.filter((n) => n.type === 'error')).toHaveLength(1)
    expect(services.services.api.pid).toBeNull()
    ws.receive(event('SERVICE_STATUS_UPDATE', { service_id: 'api', state: 'blocked', previous_state: 'recovering', pid: null, message: '', reason: 'waiting for db', source: 'supervisor' }))
    expect(notes.items.some((n) => n.type === 'warning' && n.message.includes('waiting for db'))).toBe(true)
    ws.receive(event('SERVICE_STATUS_UPDATE', { service_id: 'api', state: 'healthy', previous_state: 'blocked', pid: 4242, message: 'recovered', source: 'supervisor', recovered: true, recovery_seconds: 2.5, attempts: 1 }))
    expect(notes.items.filter((n) => n.type === 'error')).toHaveLength(0)
    expect(notes.items.some((n) => n.type === 'success' && n.message.includes('recovered in 2.5 s'))).toBe(true)
    expect(services.services.api.pid).toBe(4242)
    expect(services.services.api.state).toBe('healthy')
    socket.stop()
  })

  it('routes CONFIG_CHANGED to the config store', () => {
    const config = useConfigStore()
    const spy = vi.spyOn(config, 'onConfigChanged')
    const socket = makeSocket()
    socket.start()
    FakeWebSocket.last().receive(event('CONFIG_CHANGED', { service_id: 'api', version: 4, author: 'x', comment: '', change: 'revert' }))
    expect(spy).toHaveBeenCalledWith(expect.objectContaining({ version: 4 }))
    expect(useServiceStore().services.api).toBeUndefined() // unknown here: nothing to bump
    socket.stop()
  })

  it('skips events at or before the last id (replay overlap)', () => {
    const socket = makeSocket()
    socket.start()
    const ws = FakeWebSocket.last()
    ws.receive(event('AUDIT', { actor: 'a', action: 'x' }, '5-0'))
    ws.receive(event('AUDIT', { actor: 'a', action: 'x' }, '5-0'))
    ws.receive(event('AUDIT', { actor: 'a', action: 'x' }, '4-9'))
    ws.receive(event('AUDIT', { actor: 'a', action: 'x' }, '5-1'))
    expect(useEventStore().recent.map((r) => r.id)).toEqual(['5-1', '5-0'])
    socket.stop()
  })

  it('reconnects with growing backoff and resumes from the last event id', () => {
    vi.useFakeTimers()
    const socket = makeSocket()
    socket.start()
    let ws = FakeWebSocket.last()
    ws.open()
    ws.receive({ type: 'subscribed' })
    ws.receive(event('AUDIT', { actor: 'a', action: 'x' }, '7-3'))
    ws.serverClose(1006)
    expect(useEventStore().connection).toBe('reconnecting')
    expect(FakeWebSocket.instances).toHaveLength(1)
    vi.advanceTimersByTime(99)
    expect(FakeWebSocket.instances).toHaveLength(1)
    vi.advanceTimersByTime(1)
    ws = FakeWebSocket.last()
    expect(FakeWebSocket.instances).toHaveLength(2)
    expect(new URL(ws.url).searchParams.get('last_event_id')).toBe('7-3')
    ws.serverClose(1013) // still down: the next wait doubles
    vi.advanceTimersByTime(199)
    expect(FakeWebSocket.instances).toHaveLength(2)
    vi.advanceTimersByTime(1)
    expect(FakeWebSocket.instances).toHaveLength(3)
    FakeWebSocket.last().open()
    FakeWebSocket.last().receive({ type: 'subscribed' })
    expect(useEventStore().connection).toBe('open')
    expect(useEventStore().reconnects).toBe(2)
    FakeWebSocket.last().serverClose(1006) // after a success the backoff starts over
    vi.advanceTimersByTime(100)
    expect(FakeWebSocket.instances).toHaveLength(4)
    socket.stop()
  })

  it('caps the backoff', () => {
    const socket = makeSocket()
    expect([1, 2, 3, 4, 5, 10].map((n) => socket.delay(n))).toEqual([100, 200, 400, 800, 1000, 1000])
  })

  it('refreshes the token when the server closes with 4401, then reconnects with the new one', async () => {
    vi.useFakeTimers()
    mockFetch({ 'POST /api/v1/auth/refresh': json(tokenPair('tok2', 'r2')) })
    const socket = makeSocket()
    socket.start()
    FakeWebSocket.last().open()
    FakeWebSocket.last().serverClose(4401, 'token expired')
    await vi.waitFor(() => expect(useAuthStore().token).toBe('tok2'))
    vi.advanceTimersByTime(100)
    const ws = FakeWebSocket.last()
    expect(FakeWebSocket.instances).toHaveLength(2)
    ws.open()
    expect(JSON.parse(ws.sent[0]).token).toBe('tok2')
    socket.stop()
  })

  it('gives up on 4403 (permission missing)', () => {
    vi.useFakeTimers()
    const socket = makeSocket()
    socket.start()
    FakeWebSocket.last().serverClose(4403, "permission 'services:read' required")
    vi.advanceTimersByTime(60_000)
    expect(FakeWebSocket.instances).toHaveLength(1)
    expect(useEventStore().connection).toBe('closed')
    expect(useEventStore().lastError).toContain('services:read')
  })

  it('does not connect without a token', () => {
    useAuthStore().token = null
    makeSocket().start()
    expect(FakeWebSocket.instances).toHaveLength(0)
  })

  it('compares stream positions', () => {
    expect(isAfter('10-0', '9-5')).toBe(true)
    expect(isAfter('9-6', '9-5')).toBe(true)
    expect(isAfter('9-5', '9-5')).toBe(false)
    expect(isAfter('1-0', null)).toBe(true)
  })
})
