import { beforeEach, describe, expect, it } from 'vitest'
import { useAuthStore } from '@/stores/auth'
import { useInitializationStore } from '@/stores/initialization'
import { apiError, freshPinia, json, mockFetch } from './helpers'

function component(name: string, status: string, layer = 0, depends_on: string[] = []) {
  return { name, status, layer, depends_on, attempts: 1, last_error: null, pid: null, started_at: null, healthy_at: null, finished_at: null, started_by_run: true }
}

function run(run_id: string, status = 'RUNNING', progress = 0, components: Record<string, unknown> = {}) {
  return {
    run_id,
    workflow_id: `init/${run_id}`,
    status,
    progress,
    actor: 'dana',
    live: true,
    state: {
      run_id,
      workflow_id: `init/${run_id}`,
      status,
      progress,
      actor: 'dana',
      options: { validate_only: false },
      plan: [['database', 'cache'], ['api']],
      components,
      problems: [],
      message: '',
      started_at: '2026-01-01T00:00:00Z',
      finished_at: null,
    },
    started_at: '2026-01-01T00:00:00Z',
    finished_at: null,
    links: { self: `/api/v1/initializations/${run_id}`, cancel: '', temporal_ui: `http://ui/namespaces/default/workflows/init%2F${run_id}` },
  }
}

const accepted = { run_id: 'r1', workflow_id: 'init/r1', status: 'PENDING', queued_after: null, links: { self: '', cancel: '', temporal_ui: 'http://ui/x' } }

beforeEach(() => {
  freshPinia()
  useAuthStore().token = 't'
})

describe('initialization store', () => {
  it('starts with options (validate only) and loads the live run', async () => {
    const { calls } = mockFetch({
      'POST /api/v1/initializations': json(accepted, 202),
      'GET /api/v1/initializations/r1': json(run('r1', 'VALIDATING', 5, { database: component('database', 'PENDING') })),
      'GET /api/v1/initializations': json({ items: [run('r1')], next_cursor: null }),
    })
    const init = useInitializationStore()
    await init.startInitialization({ validateOnly: true, components: ['api'] })
    expect(calls[0].body).toMatchObject({ validate_only: true, components: ['api'], on_failure: 'stop', queue: false })
    expect(init.runId).toBe('r1')
    expect(init.status).toBe('VALIDATING')
    expect(init.isInitializing).toBe(true)
    expect(init.components.database.status).toBe('PENDING')
    expect(init.temporalUi).toContain('init%2Fr1')
  })

  it('keeps the error of a refused start', async () => {
    mockFetch({ 'POST /api/v1/initializations': apiError(409, 'conflict', 'initialization x is running') })
    const init = useInitializationStore()
    await expect(init.startInitialization()).rejects.toMatchObject({ status: 409 })
    expect(init.error?.message).toBe('initialization x is running')
  })

  it('follows live updates: progress and per-component status', async () => {
    mockFetch({ 'GET /api/v1/initializations': json({ items: [], next_cursor: null }) })
    const init = useInitializationStore()
    init.updateStatus(run('r1', 'RUNNING', 0, { database: component('database', 'PENDING'), api: component('api', 'PENDING', 1, ['database']) }).state as never)
    init.updateStatus({ run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 40, component: 'database', component_status: 'HEALTHY', message: '' })
    expect(init.progress).toBe(40)
    expect(init.components.database.status).toBe('HEALTHY')
    init.updateStatus({ run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 30, component: 'api', component_status: 'FAILED', message: 'exited 1' })
    expect(init.progress).toBe(40) // never backwards while running
    expect(init.failedComponents).toEqual(['api'])
    expect(init.components.api.last_error).toBe('exited 1')
    expect(init.componentList.map((c) => c.name)).toEqual(['database', 'api'])
    init.updateStatus({ run_id: 'r1', workflow_id: 'init/r1', status: 'FAILED', progress: 50, component: null, component_status: null, message: 'api failed' })
    expect(init.isInitializing).toBe(false)
    expect(init.status).toBe('FAILED')
  })

  it('ignores events of another run while one is in progress, switches to a new run after', async () => {
    mockFetch({
      'GET /api/v1/initializations/r2': json(run('r2', 'RUNNING', 10)),
      'GET /api/v1/initializations': json({ items: [], next_cursor: null }),
    })
    const init = useInitializationStore()
    init.updateStatus(run('r1', 'RUNNING', 20).state as never)
    init.updateStatus({ run_id: 'r2', workflow_id: 'init/r2', status: 'RUNNING', progress: 90, component: null, component_status: null, message: '' })
    expect(init.runId).toBe('r1')
    init.updateStatus({ run_id: 'r1', workflow_id: 'init/r1', status: 'SUCCEEDED', progress: 100, component: null, component_status: null, message: '' })
    init.updateStatus({ run_id: 'r2', workflow_id: 'init/r2', status: 'RUNNING', progress: 10, component: null, component_status: null, message: '' })
    expect(init.runId).toBe('r2')
  })

  it('cancels and retries a component in the current run', async () => {
    const { calls } = mockFetch({
      'POST /api/v1/initializations/r1/cancel': json({ run_id: 'r1', status: 'cancelling' }, 202),
      'POST /api/v1/initializations/r1/components/api/retry': json({ run_id: 'r1', component: 'api', accepted: true, message: 'retrying' }),
    })
    const init = useInitializationStore()
    init.updateStatus(run('r1', 'FAILED', 50, { api: component('api', 'FAILED') }).state as never)
    const result = await init.retryComponent('api')
    expect(result.accepted).toBe(true)
    expect(init.components.api.status).toBe('PENDING')
    init.status = 'RUNNING'
    await init.cancelInitialization()
    expect(init.status).toBe('CANCELLING')
    expect(calls.map((c) => c.path)).toEqual(['/api/v1/initializations/r1/components/api/retry', '/api/v1/initializations/r1/cancel'])
  })

  it('loads the history; lastInitialization is the newest run', async () => {
    mockFetch({
      'GET /api/v1/initializations': json({ items: [run('r2', 'SUCCEEDED', 100), run('r1', 'FAILED', 40)], next_cursor: null }),
      'GET /api/v1/initializations/r2': json(run('r2', 'SUCCEEDED', 100)),
    })
    const init = useInitializationStore()
    await init.loadLatest()
    expect(init.history).toHaveLength(2)
    expect(init.lastInitialization?.run_id).toBe('r2')
    expect(init.runId).toBe('r2')
    expect(init.isInitializing).toBe(false)
  })
})
