import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type {
  ControlResult,
  HealthCheck,
  HealthCheckPublic,
  RecoveryAccepted,
  RecoveryPage,
  RecoveryPublic,
  RecoveryUpdate,
  ServiceMetrics,
  ServicePage,
  ServicePublic,
  ServiceStatusUpdate,
  SupervisionPublic,
} from '@/api/types'
import { API, useApi } from '@/composables/useApi'

export type ServiceStatus = ServicePublic
export type ServiceAction = 'start' | 'stop' | 'restart' | 'recover'
export type HealthStatus = 'HEALTHY' | 'DEGRADED' | 'FAILED' | 'STOPPED' | 'UNKNOWN'

export interface HealthCheckPoint {
  healthy: boolean
  latency_ms: number
  message: string
  checked_at: string
}

export interface Transition {
  state: string
  previous: string | null
  at: string
  message: string
  source: string
}

export interface ServiceFilters {
  q?: string
  state?: string
  driver?: string
  label?: string[]
}

const HEALTH: Record<string, HealthStatus> = {
  healthy: 'HEALTHY',
  completed: 'HEALTHY', // a job that exited with a success code
  starting: 'DEGRADED',
  not_ready: 'DEGRADED', // alive, not ready (warming up): dependants wait, nothing restarts it
  blocked: 'DEGRADED',
  recovering: 'FAILED', // down: being restarted after a crash or failing probes
  backing_off: 'FAILED',
  unhealthy: 'FAILED',
  failed: 'FAILED',
  gave_up: 'FAILED',
  stopped: 'STOPPED',
  stopping: 'DEGRADED', // desired stopped, the process not gone yet
  unknown: 'UNKNOWN',
}

export function healthOf(state: string | undefined | null): HealthStatus {
  return (state && HEALTH[state]) || 'UNKNOWN'
}

/** RECOVERY_UPDATE statuses after which a recovery is over (watching: healthy again under supervision) */
const RECOVERY_ENDED = ['watching', 'recovered', 'gave_up', 'failed', 'cancelled', 'paused']
const MAX_CHECKS = 200
const MAX_TRANSITIONS = 50

export const useServiceStore = defineStore('services', () => {
  const services = ref<Record<string, ServiceStatus>>({})
  const activeService = ref<string | null>(null)
  const healthChecks = ref<Record<string, HealthCheckPoint[]>>({})
  const metrics = ref<Record<string, ServiceMetrics>>({})
  const recoveries = ref<Record<string, RecoveryPublic[]>>({})
  const liveRecoveries = ref<Record<string, RecoveryUpdate>>({})
  const supervision = ref<Record<string, SupervisionPublic>>({})
  const transitions = ref<Record<string, Transition[]>>({})
  const loading = ref(false)
  const loaded = ref(false)

  const list = computed(() => Object.values(services.value).sort((a, b) => a.id.localeCompare(b.id)))
  const runningServices = computed(() =>
    list.value.filter((s) => ['HEALTHY', 'DEGRADED'].includes(healthOf(s.state))),
  )
  const failedServices = computed(() => list.value.filter((s) => healthOf(s.state) === 'FAILED'))
  const serviceHealth = computed(() => (serviceId: string): HealthStatus => healthOf(services.value[serviceId]?.state))
  const current = computed(() => (activeService.value ? services.value[activeService.value] ?? null : null))

  function recordTransition(id: string, t: Transition): void {
    const items = (transitions.value[id] ??= [])
    items.unshift(t)
    if (items.length > MAX_TRANSITIONS) items.length = MAX_TRANSITIONS
  }

  async function fetchServices(filters: ServiceFilters = {}): Promise<ServiceStatus[]> {
    loading.value = true
    try {
      const all: ServiceStatus[] = []
      let cursor: string | null | undefined
      do {
        const page: ServicePage = await useApi().get<ServicePage>(`${API}/services`, {
          limit: 500,
          cursor: cursor ?? undefined,
          q: filters.q,
          state: filters.state,
          driver: filters.driver,
          label: filters.label,
        })
        all.push(...page.items)
        cursor = page.next_cursor
      } while (cursor)
      const filtered = Boolean(filters.q || filters.state || filters.driver || filters.label?.length)
      if (!filtered) {
        services.value = Object.fromEntries(all.map((s) => [s.id, s]))
        loaded.value = true
      } else {
        all.forEach((s) => (services.value[s.id] = s))
      }
      return all
    } finally {
      loading.value = false
    }
  }

  async function fetchService(serviceId: string): Promise<ServiceStatus> {
    const row = await useApi().get<ServicePublic>(`${API}/services/${encodeURIComponent(serviceId)}`)
    services.value[serviceId] = row
    return row
  }

  async function controlService(
    serviceId: string,
    action: ServiceAction,
    options: { wait?: boolean; reason?: string } = {},
  ): Promise<ControlResult | RecoveryAccepted> {
    const id = encodeURIComponent(serviceId)
    if (action === 'recover') {
      return useApi().post<RecoveryAccepted>(`${API}/services/${id}/recoveries`, {
        reason: options.reason ?? 'manual (dashboard)',
      })
    }
    return useApi().post<ControlResult>(`${API}/services/${id}/actions`, { action, wait: options.wait ?? false })
  }

  /** A SERVICE_STATUS_UPDATE (or any partial service) for one service. */
  function updateServiceStatus(serviceId: string, status: Partial<ServiceStatusUpdate> & { state?: string }): void {
    const existing = services.value[serviceId]
    const at = new Date().toISOString()
    if (!existing) {
      void fetchService(serviceId).catch(() => undefined)
      if (status.state) {
        recordTransition(serviceId, {
          state: status.state, previous: status.previous_state ?? null, at,
          message: status.message ?? '', source: status.source ?? '',
        })
      }
      return
    }
    if (status.state && status.state !== existing.state) {
      recordTransition(serviceId, {
        state: status.state,
        previous: existing.state,
        at,
        message: status.message ?? '',
        source: status.source ?? '',
      })
      existing.state = status.state
      existing.state_changed_at = at
    }
    if (status.pid !== undefined) {
      // the event's pid is the truth: null once the process is gone (stopped, blocked after a crash, gave up)
      existing.pid = status.pid ?? null
      const { pid: _old, ...rest } = existing.state_detail ?? {}
      existing.state_detail = status.pid === null ? rest : { ...rest, pid: status.pid }
    }
    if (status.message) existing.state_detail = { ...existing.state_detail, message: status.message }
  }

  async function updateHealthChecks(serviceId: string, limit = 100): Promise<HealthCheckPoint[]> {
    const rows = await useApi().get<HealthCheckPublic[]>(
      `${API}/services/${encodeURIComponent(serviceId)}/health-checks`,
      { limit },
    )
    const points = rows.slice().reverse() // oldest first, for charts
    healthChecks.value[serviceId] = points
    return points
  }

  /** A HEALTH_CHECK event: append to the service's latency series. */
  function addHealthCheck(check: HealthCheck): void {
    const points = (healthChecks.value[check.service_id] ??= [])
    const last = points[points.length - 1]
    if (last && last.checked_at === check.checked_at) return
    points.push({ healthy: check.healthy, latency_ms: check.latency_ms, message: check.message ?? '', checked_at: check.checked_at })
    if (points.length > MAX_CHECKS) points.splice(0, points.length - MAX_CHECKS)
  }

  async function fetchMetrics(serviceId: string): Promise<ServiceMetrics> {
    const m = await useApi().get<ServiceMetrics>(`${API}/services/${encodeURIComponent(serviceId)}/metrics`)
    metrics.value[serviceId] = m
    return m
  }

  async function fetchRecoveries(serviceId: string, limit = 20): Promise<RecoveryPublic[]> {
    const page = await useApi().get<RecoveryPage>(`${API}/services/${encodeURIComponent(serviceId)}/recoveries`, {
      limit,
    })
    recoveries.value[serviceId] = page.items
    return page.items
  }

  async function fetchSupervision(serviceId: string): Promise<SupervisionPublic> {
    const s = await useApi().get<SupervisionPublic>(`${API}/services/${encodeURIComponent(serviceId)}/supervision`)
    supervision.value[serviceId] = s
    return s
  }

  /** A RECOVERY_UPDATE event; when a recovery ends, what was loaded about the service is read again. */
  function updateRecovery(update: RecoveryUpdate): void {
    const id = update.service_id
    liveRecoveries.value[id] = update
    if (!RECOVERY_ENDED.includes(update.status)) return
    if (recoveries.value[id]) void fetchRecoveries(id).catch(() => undefined)
    if (supervision.value[id]) void fetchSupervision(id).catch(() => undefined)
    if (metrics.value[id]) void fetchMetrics(id).catch(() => undefined)
  }

  /** A CONFIG_CHANGED event: the service's current config version. */
  function updateVersion(serviceId: string, version: number): void {
    const existing = services.value[serviceId]
    if (existing && version > existing.version) existing.version = version
  }

  function select(serviceId: string | null): void {
    activeService.value = serviceId
  }

  function clear(): void {
    services.value = {}
    healthChecks.value = {}
    metrics.value = {}
    recoveries.value = {}
    liveRecoveries.value = {}
    supervision.value = {}
    transitions.value = {}
    loaded.value = false
  }

  return {
    services,
    activeService,
    healthChecks,
    metrics,
    recoveries,
    liveRecoveries,
    supervision,
    transitions,
    loading,
    loaded,
    list,
    current,
    runningServices,
    failedServices,
    serviceHealth,
    fetchServices,
    fetchService,
    controlService,
    updateServiceStatus,
    updateHealthChecks,
    addHealthCheck,
    fetchMetrics,
    fetchRecoveries,
    fetchSupervision,
    updateRecovery,
    updateVersion,
    select,
    clear,
  }
})
