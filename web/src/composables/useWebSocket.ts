// Live updates: one WebSocket to /api/v1/ws, authenticated by its first message, dispatching events to the
// stores, reconnecting with exponential backoff and resuming after the last event id it saw.
import { onMounted, onUnmounted } from 'vue'
import type {
  ConfigChanged,
  HealthCheck,
  InitializationUpdate,
  MetricsUpdate,
  RecoveryUpdate,
  RolloutUpdate,
  ServiceStatusUpdate,
  WindflowEvent,
} from '@/api/types'
import { useAuthStore } from '@/stores/auth'
import { useConfigStore } from '@/stores/config'
import { useEventStore } from '@/stores/events'
import { useInitializationStore } from '@/stores/initialization'
import { useMetricsStore } from '@/stores/metrics'
import { useNotificationStore } from '@/stores/notifications'
import { useRolloutStore } from '@/stores/rollouts'
import { healthOf, useServiceStore } from '@/stores/services'
import { useTimelineStore } from '@/stores/timeline'

export const CLOSE_UNAUTHORIZED = 4401
export const CLOSE_FORBIDDEN = 4403
export const CLOSE_BAD_REQUEST = 4400

export interface SocketOptions {
  url?: string
  /** the WebSocket constructor (tests pass a fake) */
  WebSocketImpl?: typeof WebSocket
  baseDelay?: number
  maxDelay?: number
  random?: () => number
}

export function defaultUrl(): string {
  if (import.meta.env.VITE_WS_URL) return import.meta.env.VITE_WS_URL
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${proto}//${location.host}/api/v1/ws`
}

/** Compare stream positions "<ms>-<seq>" (the server's ids). */
export function isAfter(a: string, b: string | null): boolean {
  if (b === null) return true
  const [am, as] = a.split('-').map(Number)
  const [bm, bs] = b.split('-').map(Number)
  return am > bm || (am === bm && (as ?? 0) > (bs ?? 0))
}

/** The open "down" toast of each service, dismissed when it is healthy again. */
const downToasts = new Map<string, number>()

/** Route one event to the stores (the switch of the design notes). */
export function dispatchEvent(event: WindflowEvent): void {
  const init = useInitializationStore()
  const services = useServiceStore()
  const metrics = useMetricsStore()
  const notifications = useNotificationStore()
  switch (event.event_type) {
    case 'INITIALIZATION_UPDATE': {
      const data = event.data as InitializationUpdate
      init.updateStatus(data)
      if (data.status === 'FAILED' && !data.component) {
        notifications.add({ type: 'error', message: `Initialization ${data.run_id} failed${data.message ? `: ${data.message}` : ''}` })
      }
      break
    }
    case 'SERVICE_STATUS_UPDATE': {
      const data = event.data as ServiceStatusUpdate
      const before = services.serviceHealth(data.service_id)
      services.updateServiceStatus(data.service_id, data)
      useTimelineStore().onStatus(data, event.timestamp)
      const open = downToasts.get(data.service_id)
      if (healthOf(data.state) === 'HEALTHY' && open !== undefined) {
        notifications.dismiss(open) // back up: the red toast goes at once, not after its timeout
        downToasts.delete(data.service_id)
      }
      if (data.recovered) {
        const took = data.recovery_seconds != null ? ` in ${data.recovery_seconds.toFixed(1)} s` : ''
        notifications.add({ type: 'success', message: `Service ${data.service_id} recovered${took}` })
      } else if (data.state === 'blocked' && before !== 'DEGRADED') {
        notifications.add({ type: 'warning', message: `Service ${data.service_id} blocked${data.reason ? `: ${data.reason}` : ''}` })
      } else if (healthOf(data.state) === 'FAILED' && before !== 'FAILED') {
        const id = notifications.add({ type: 'error', message: `Service ${data.service_id} ${data.state}${data.message ? `: ${data.message}` : ''}`, timeout: data.state === 'gave_up' ? 0 : 15000 })
        downToasts.set(data.service_id, id)
      }
      break
    }
    case 'HEALTH_CHECK':
      services.addHealthCheck(event.data as HealthCheck)
      break
    case 'METRICS_UPDATE':
      metrics.updateMetrics(event.data as MetricsUpdate, event.timestamp)
      break
    case 'RECOVERY_UPDATE': {
      const data = event.data as RecoveryUpdate
      services.updateRecovery(data) // the toasts come from SERVICE_STATUS_UPDATE (recovered, blocked, gave_up)
      break
    }
    case 'ROLLOUT_UPDATE':
      useRolloutStore().onUpdate(event.data as RolloutUpdate)
      break
    case 'CONFIG_CHANGED': {
      const data = event.data as ConfigChanged
      services.updateVersion(data.service_id, data.version)
      useConfigStore().onConfigChanged(data)
      break
    }
    default:
      break
  }
}

export class EventSocket {
  private socket: WebSocket | null = null
  private timer: ReturnType<typeof setTimeout> | null = null
  private attempt = 0
  private stopped = true
  private token: string | null = null
  private readonly options: Required<Omit<SocketOptions, 'url'>> & { url: string }

  constructor(options: SocketOptions = {}) {
    this.options = {
      url: options.url ?? '',
      WebSocketImpl: options.WebSocketImpl ?? WebSocket,
      baseDelay: options.baseDelay ?? 500,
      maxDelay: options.maxDelay ?? 15000,
      random: options.random ?? Math.random,
    }
  }

  get connected(): boolean {
    return this.socket !== null && useEventStore().connection === 'open'
  }

  /** Milliseconds before reconnect attempt n (1-based): exponential, capped, with jitter. */
  delay(n: number): number {
    const exp = Math.min(this.options.maxDelay, this.options.baseDelay * 2 ** (n - 1))
    return Math.round(exp / 2 + (exp / 2) * this.options.random())
  }

  start(): void {
    this.stopped = false
    this.connect()
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    const socket = this.socket
    this.socket = null
    if (socket) {
      socket.onclose = null
      socket.onmessage = null
      socket.close(1000, 'bye')
    }
    useEventStore().connection = 'closed'
  }

  private connect(): void {
    const auth = useAuthStore()
    const events = useEventStore()
    if (this.stopped || !auth.token) return
    const url = new URL(this.options.url || defaultUrl(), typeof location !== 'undefined' ? location.href : undefined)
    if (events.lastEventId) url.searchParams.set('last_event_id', events.lastEventId)
    events.connection = this.attempt > 0 ? 'reconnecting' : 'connecting'
    const socket = new this.options.WebSocketImpl(url.toString())
    this.socket = socket
    const token = auth.token
    this.token = token
    socket.onopen = () => socket.send(JSON.stringify({ type: 'auth', token }))
    socket.onmessage = (message: MessageEvent) => this.onMessage(socket, message)
    socket.onclose = (close: CloseEvent) => void this.onClose(socket, close)
    socket.onerror = () => {
      events.lastError = 'connection error'
    }
  }

  private onMessage(socket: WebSocket, message: MessageEvent): void {
    if (socket !== this.socket) return
    let body: Record<string, unknown>
    try {
      body = JSON.parse(String(message.data)) as Record<string, unknown>
    } catch {
      return
    }
    const events = useEventStore()
    switch (body.type) {
      case 'subscribed':
        this.attempt = 0
        events.connection = 'open'
        events.lastError = null
        break
      case 'event': {
        const id = String(body.id)
        if (!isAfter(id, events.lastEventId)) return // already seen (replay overlap)
        const event = body.event as WindflowEvent
        events.record(id, event)
        dispatchEvent(event)
        break
      }
      case 'gap':
        useNotificationStore().add({ type: 'warning', message: String(body.message ?? 'some events were missed') })
        void useServiceStore().fetchServices().catch(() => undefined)
        break
      case 'ping':
        socket.send(JSON.stringify({ type: 'pong' }))
        break
      default:
        break
    }
  }

  private async onClose(socket: WebSocket, close: CloseEvent): Promise<void> {
    if (socket !== this.socket) return
    this.socket = null
    const events = useEventStore()
    events.lastError = close.reason || `closed (${close.code})`
    if (this.stopped) {
      events.connection = 'closed'
      return
    }
    if (close.code === CLOSE_FORBIDDEN || close.code === CLOSE_BAD_REQUEST) {
      events.connection = 'closed'
      return
    }
    if (close.code === CLOSE_UNAUTHORIZED) {
      const auth = useAuthStore()
      try {
        if (!auth.token || auth.token === this.token) await auth.refreshToken() // not renewed meanwhile
      } catch {
        events.connection = 'closed'
        return
      }
    }
    this.attempt += 1
    events.reconnects += 1
    events.connection = 'reconnecting'
    this.timer = setTimeout(() => {
      this.timer = null
      this.connect()
    }, this.delay(this.attempt))
  }
}

/** Connect while the calling component is mounted (the app shell). */
export function useWebSocket(options: SocketOptions = {}): EventSocket {
  const socket = new EventSocket(options)
  onMounted(() => socket.start())
  onUnmounted(() => socket.stop())
  return socket
}
