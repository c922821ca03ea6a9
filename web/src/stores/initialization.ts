import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type {
  ComponentState,
  InitializationAccepted,
  InitializationCreate,
  InitializationPage,
  InitializationPublic,
  InitializationUpdate,
  InitState,
  InitStatus,
} from '@/api/types'
import { API, useApi } from '@/composables/useApi'

export type InitializationStatus = InitStatus | 'IDLE'
export type InitializationHistory = InitializationPublic
export type ComponentStatus = ComponentState

export interface InitOptions {
  components?: string[]
  validateOnly?: boolean
  onFailure?: 'stop' | 'continue'
  onCancel?: 'rollback' | 'leave_running'
  parallelism?: number | null
  componentTimeout?: number
  /** when a full initialization is running, queue behind it instead of failing with 409 */
  queue?: boolean
}

export const TERMINAL: InitStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED']

export function isTerminal(status: InitializationStatus): boolean {
  return (TERMINAL as string[]).includes(status)
}

export const useInitializationStore = defineStore('initialization', () => {
  const status = ref<InitializationStatus>('IDLE')
  const runId = ref<string | null>(null)
  const workflowId = ref<string | null>(null)
  const components = ref<Record<string, ComponentState>>({})
  const plan = ref<string[][]>([])
  const progress = ref(0)
  const message = ref('')
  const validateOnly = ref(false)
  const problems = ref<Array<Record<string, unknown>>>([])
  const temporalUi = ref<string | null>(null)
  const startedAt = ref<string | null>(null)
  const finishedAt = ref<string | null>(null)
  const error = ref<Error | null>(null)
  const history = ref<InitializationHistory[]>([])

  const isInitializing = computed(() => runId.value !== null && !isTerminal(status.value) && status.value !== 'IDLE')
  const failedComponents = computed(() =>
    Object.values(components.value)
      .filter((c) => c.status === 'FAILED')
      .map((c) => c.name),
  )
  const lastInitialization = computed<InitializationHistory | null>(() => history.value[0] ?? null)
  /** components in start order; the layer comes from the plan (0-based) when there is one */
  const componentList = computed(() => {
    const layerOf = new Map(plan.value.flatMap((names, i) => names.map((n) => [n, i] as const)))
    return Object.values(components.value)
      .map((c) => ({ ...c, layer: layerOf.get(c.name) ?? c.layer }))
      .sort((a, b) => a.layer - b.layer || a.name.localeCompare(b.name))
  })

  function reset(): void {
    status.value = 'IDLE'
    runId.value = null
    workflowId.value = null
    components.value = {}
    plan.value = []
    progress.value = 0
    message.value = ''
    problems.value = []
    temporalUi.value = null
    startedAt.value = null
    finishedAt.value = null
    error.value = null
  }

  function applyState(state: InitState): void {
    runId.value = state.run_id
    workflowId.value = state.workflow_id
    status.value = state.status
    progress.value = state.progress
    plan.value = state.plan ?? []
    components.value = { ...(state.components ?? {}) }
    message.value = state.message ?? ''
    problems.value = state.problems ?? []
    validateOnly.value = state.options?.validate_only ?? false
    startedAt.value = state.started_at ?? null
    finishedAt.value = state.finished_at ?? null
  }

  function applyRun(run: InitializationPublic): void {
    temporalUi.value = run.links.temporal_ui ?? null
    if (run.state) applyState(run.state)
    else {
      runId.value = run.run_id
      workflowId.value = run.workflow_id
      status.value = run.status
      progress.value = run.progress
      validateOnly.value = run.validate_only ?? false
    }
    const index = history.value.findIndex((h) => h.run_id === run.run_id)
    const summary = { ...run, state: null }
    if (index >= 0) history.value[index] = summary
  }

  async function startInitialization(options: InitOptions = {}): Promise<InitializationAccepted> {
    error.value = null
    const body: Partial<InitializationCreate> = {
      components: options.components ?? [],
      validate_only: options.validateOnly ?? false,
      on_failure: options.onFailure ?? 'stop',
      on_cancel: options.onCancel ?? 'rollback',
      parallelism: options.parallelism ?? null,
      queue: options.queue ?? false,
    }
    if (options.componentTimeout) body.component_timeout = options.componentTimeout
    try {
      const accepted = await useApi().post<InitializationAccepted>(`${API}/initializations`, body)
      reset()
      runId.value = accepted.run_id
      workflowId.value = accepted.workflow_id
      status.value = accepted.status
      validateOnly.value = body.validate_only ?? false
      temporalUi.value = accepted.links.temporal_ui ?? null
      await fetchRun(accepted.run_id).catch(() => undefined) // live events fill in the rest
      void fetchHistory().catch(() => undefined)
      return accepted
    } catch (e) {
      error.value = e as Error
      throw e
    }
  }

  async function fetchRun(id: string): Promise<InitializationPublic> {
    const run = await useApi().get<InitializationPublic>(`${API}/initializations/${encodeURIComponent(id)}`)
    // an event may have moved the same run further meanwhile: never go back in progress
    if (run.run_id === runId.value && run.progress < progress.value && !isTerminal(run.status)) return run
    applyRun(run)
    return run
  }

  async function fetchHistory(limit = 20): Promise<void> {
    const page = await useApi().get<InitializationPage>(`${API}/initializations`, { limit })
    history.value = page.items
  }

  /** The newest run (live while it runs), or nothing: what the initialization view shows first. */
  async function loadLatest(): Promise<void> {
    await fetchHistory()
    const latest = history.value[0]
    if (latest && latest.run_id !== runId.value) await fetchRun(latest.run_id)
    else if (latest && runId.value) await fetchRun(runId.value)
  }

  async function cancelInitialization(): Promise<void> {
    if (!runId.value) throw new Error('no initialization to cancel')
    await useApi().post(`${API}/initializations/${encodeURIComponent(runId.value)}/cancel`)
    if (!isTerminal(status.value)) status.value = 'CANCELLING'
  }

  async function retryComponent(componentId: string): Promise<{ accepted: boolean; message: string }> {
    if (!runId.value) throw new Error('no initialization to retry in')
    const result = await useApi().post<{ accepted: boolean; message: string }>(
      `${API}/initializations/${encodeURIComponent(runId.value)}/components/${encodeURIComponent(componentId)}/retry`,
    )
    const component = components.value[componentId]
    if (result.accepted && component) component.status = 'PENDING'
    return result
  }

  /** An INITIALIZATION_UPDATE event (or a full state). Events of an older run than the one shown are ignored. */
  function updateStatus(data: InitializationUpdate | InitState): void {
    if ('components' in data && 'plan' in data) {
      applyState(data as InitState)
      return
    }
    const update = data as InitializationUpdate
    if (update.run_id !== runId.value) {
      if (runId.value !== null && !isTerminal(status.value) && status.value !== 'IDLE') return
      reset()
      runId.value = update.run_id
      workflowId.value = update.workflow_id
      void fetchRun(update.run_id).catch(() => undefined)
    }
    status.value = update.status as InitStatus
    progress.value = Math.max(isTerminal(update.status as InitStatus) ? 0 : progress.value, update.progress)
    if (update.message) message.value = update.message
    if (update.component && update.component_status) {
      const existing = components.value[update.component]
      components.value[update.component] = {
        ...(existing ?? { name: update.component, layer: 0, depends_on: [], attempts: 0, conditions: {}, kind: 'service', log_tail: [] }),
        status: update.component_status as ComponentState['status'],
        last_error: update.component_status === 'FAILED' ? update.message || existing?.last_error : existing?.last_error,
      }
    }
    if (isTerminal(update.status as InitStatus)) {
      finishedAt.value = new Date().toISOString()
      // the final state (attempts, healthy_at, errors) and the history row
      void fetchRun(update.run_id)
        .catch(() => undefined)
        .then(() => fetchHistory())
        .catch(() => undefined)
    }
  }

  return {
    status,
    runId,
    workflowId,
    components,
    plan,
    progress,
    message,
    validateOnly,
    problems,
    temporalUi,
    startedAt,
    finishedAt,
    error,
    history,
    isInitializing,
    failedComponents,
    lastInitialization,
    componentList,
    startInitialization,
    cancelInitialization,
    retryComponent,
    updateStatus,
    fetchRun,
    fetchHistory,
    loadLatest,
    reset,
  }
})
