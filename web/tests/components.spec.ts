import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { defineComponent, h, onMounted } from 'vue'
import { ApiError } from '@/api/http'
import { createMemoryHistory, createRouter } from 'vue-router'
import DependencyGraph from '@/components/DependencyGraph.vue'
import ErrorBoundary from '@/components/ErrorBoundary.vue'
import JobRuns from '@/components/JobRuns.vue'
import LatencyChart from '@/components/LatencyChart.vue'
import ServiceActions from '@/components/ServiceActions.vue'
import StatusBadge from '@/components/StatusBadge.vue'
import { layersOf } from '@/components/graph'
import { useAuthStore } from '@/stores/auth'
import { useInitializationStore } from '@/stores/initialization'
import InitializationView from '@/views/InitializationView.vue'
import LoginView from '@/views/LoginView.vue'
import { freshPinia, json, me, mockFetch, signedIn, tokenPair } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})

describe('DependencyGraph', () => {
  const services = [
    { id: 'database', depends_on: [], state: 'healthy' },
    { id: 'cache', depends_on: [], state: 'failed' },
    { id: 'api', depends_on: ['database', 'cache'], state: 'starting' },
    { id: 'web', depends_on: ['api', 'ghost'], state: 'stopped' },
  ]

  it('layers nodes by dependency depth (unknown dependencies and cycles tolerated)', () => {
    expect(layersOf(services)).toEqual({ database: 0, cache: 0, api: 1, web: 2 })
    const cyclic = layersOf([{ id: 'a', depends_on: ['b'] }, { id: 'b', depends_on: ['a'] }])
    expect(Object.keys(cyclic).sort()).toEqual(['a', 'b']) // every member placed, no endless recursion
  })

  it('draws one node per service coloured by health, one edge per dependency', async () => {
    const wrapper = mount(DependencyGraph, { props: { services } })
    const nodes = wrapper.findAll('[data-testid="graph-node"]')
    expect(nodes).toHaveLength(4)
    const health = Object.fromEntries(nodes.map((n) => [n.attributes('data-service'), n.attributes('data-health')]))
    expect(health).toEqual({ database: 'HEALTHY', cache: 'FAILED', api: 'DEGRADED', web: 'STOPPED' })
    expect(wrapper.findAll('path.edge')).toHaveLength(3)
    expect(wrapper.find('[data-service="web"]').attributes('transform')).toContain('translate(456')
    await nodes[0].trigger('click')
    expect(wrapper.emitted('select')?.[0]).toEqual(['database'])
  })
})

describe('DependencyGraph conditions', () => {
  it('labels each edge with its condition (healthy, the default, unlabelled) and marks jobs', () => {
    const wrapper = mount(DependencyGraph, {
      props: {
        services: [
          { id: 'db', depends_on: [], state: 'healthy' },
          { id: 'migrate', kind: 'job', depends_on: ['db'], state: 'completed' },
          { id: 'cache', depends_on: [], state: 'starting' },
          {
            id: 'api',
            depends_on: ['db', 'migrate', 'cache'],
            conditions: { db: 'healthy', migrate: 'completed_successfully', cache: 'started' },
            state: 'healthy',
          },
        ],
      },
    })
    const conditions = Object.fromEntries(
      wrapper.findAll('path.edge').map((e) => [e.attributes('data-edge'), e.attributes('data-condition')]),
    )
    expect(conditions).toEqual({
      'db->migrate': 'healthy',
      'db->api': 'healthy',
      'migrate->api': 'completed_successfully',
      'cache->api': 'started',
    })
    expect(wrapper.findAll('[data-testid="edge-label"]').map((l) => l.text()).sort()).toEqual(['completed', 'started'])
    expect(wrapper.find('[data-service="migrate"] .state').text()).toBe('job · completed')
    expect(wrapper.find('[data-service="migrate"]').attributes('data-health')).toBe('HEALTHY')
  })
})

describe('JobRuns', () => {
  it("lists a job's attempts with exit code, duration and output", async () => {
    signedIn(['services:read', 'configs:read'])
    mockFetch({
      'GET /api/v1/services/migrate/job-runs': json([
        {
          service_id: 'migrate', version: 2, run_id: 'r1', attempt: 2, succeeded: true, exit_code: 0,
          started_at: '2026-12-06T10:00:00Z', finished_at: '2026-12-06T10:00:01Z', duration: 1.04,
          message: 'migrate exited with code 0', log_tail: ['applied 3 migrations'],
        },
        {
          service_id: 'migrate', version: 2, run_id: 'r1', attempt: 1, succeeded: false, exit_code: 2,
          started_at: '2026-12-06T09:59:58Z', finished_at: '2026-12-06T09:59:59Z', duration: 0.31,
          message: "migrate exited with code 2 (success: 0): can't open file", log_tail: ["can't open file"],
        },
      ]),
    })
    const wrapper = mount(JobRuns, { props: { serviceId: 'migrate' }, global: { plugins: [pinia] } })
    await flushPromises()
    const rows = wrapper.findAll('[data-testid="job-runs"] tbody tr')
    expect(rows.map((r) => r.attributes('data-succeeded'))).toEqual(['true', 'false'])
    expect(rows[0].text()).toContain('1.0 s')
    expect(rows[1].find('.error-text').text()).toContain("can't open file")
    expect(rows[0].find('pre').text()).toBe('applied 3 migrations')
  })
})

describe('LatencyChart', () => {
  it('plots latency and marks failed checks', () => {
    const points = [
      { healthy: true, latency_ms: 2, message: '', checked_at: '2026-01-01T00:00:00Z' },
      { healthy: false, latency_ms: 10, message: 'refused', checked_at: '2026-01-01T00:00:01Z' },
      { healthy: true, latency_ms: 4, message: '', checked_at: '2026-01-01T00:00:02Z' },
    ]
    const wrapper = mount(LatencyChart, { props: { points } })
    expect(wrapper.find('polyline').attributes('points')!.split(' ')).toHaveLength(3)
    expect(wrapper.findAll('circle.failure')).toHaveLength(1)
  })

  it('says when there is nothing to plot', () => {
    const wrapper = mount(LatencyChart, { props: { points: [] } })
    expect(wrapper.text()).toContain('no health checks yet')
  })
})

describe('StatusBadge', () => {
  it('tones by health', () => {
    expect(mount(StatusBadge, { props: { state: 'starting' } }).classes()).toContain('degraded')
    expect(mount(StatusBadge, { props: { state: 'recovering' } }).classes()).toContain('failed')
    expect(mount(StatusBadge, { props: { state: 'SUCCEEDED', kind: 'run' } }).classes()).toContain('healthy')
  })
})

describe('ErrorBoundary', () => {
  it('shows a failure with a retry that remounts the content', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined) // Vue reports the captured error
    let fail = true
    let mounts = 0
    const Flaky = defineComponent({
      setup() {
        mounts += 1
        if (fail) throw new Error('the API is down')
        return () => h('p', { class: 'ok' }, 'fine')
      },
    })
    const wrapper = mount(ErrorBoundary, { slots: { default: () => h(Flaky) } })
    await flushPromises()
    expect(wrapper.find('[data-testid="error-boundary"]').text()).toContain('the API is down')
    fail = false
    await wrapper.find('[data-testid="error-retry"]').trigger('click')
    expect(wrapper.find('.ok').exists()).toBe(true)
    expect(mounts).toBe(2)
  })
})

describe('ErrorBoundary and failing loads', () => {
  it('catches a view whose data fails to load (async onMounted)', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const View = defineComponent({
      setup() {
        onMounted(async () => {
          await Promise.resolve()
          throw new ApiError(503, 'unavailable', 'the event bus is unreachable')
        })
        return () => h('p', 'loading')
      },
    })
    const wrapper = mount(ErrorBoundary, { slots: { default: () => h(View) } })
    await flushPromises()
    expect(wrapper.find('[data-testid="error-boundary"]').text()).toContain('the event bus is unreachable (503 unavailable)')
  })
})

describe('ErrorBoundary and the session', () => {
  it('leaves a 401 to the sign-in flow', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const View = defineComponent({
      setup() {
        onMounted(async () => {
          throw new ApiError(401, 'unauthorized', 'authentication required')
        })
        return () => h('p', 'content')
      },
    })
    const wrapper = mount(ErrorBoundary, { slots: { default: () => h(View) } })
    await flushPromises()
    expect(wrapper.find('[data-testid="error-boundary"]').exists()).toBe(false)
  })
})

describe('ServiceActions', () => {
  it('hides actions the user may not take', () => {
    signedIn(['services:read'])
    const wrapper = mount(ServiceActions, { props: { serviceId: 'api' }, global: { plugins: [pinia] } })
    expect(wrapper.find('[data-testid="action-restart"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="action-recover"]').exists()).toBe(false)
    expect(wrapper.text()).toContain('read-only')
  })

  it('asks for confirmation before acting', async () => {
    signedIn(['services:read', 'services:control', 'recovery:trigger'])
    const { calls } = mockFetch({ 'POST /api/v1/services/api/actions': json({ service_id: 'api', action: 'stop', ok: true, message: 'accepted' }, 202) })
    const wrapper = mount(ServiceActions, { props: { serviceId: 'api' }, global: { plugins: [pinia] } })
    await wrapper.find('[data-testid="action-stop"]').trigger('click')
    expect(calls).toHaveLength(0)
    expect(wrapper.find('[data-testid="confirm-dialog"]').text()).toContain('stop api?')
    await wrapper.find('[data-testid="confirm-ok"]').trigger('click')
    await flushPromises()
    expect(calls[0].body).toEqual({ action: 'stop', wait: false })
    expect(wrapper.find('[data-testid="confirm-dialog"]').exists()).toBe(false)
  })
})

function router() {
  return createRouter({ history: createMemoryHistory(), routes: [{ path: '/', component: { render: () => null } }, { path: '/login', component: LoginView }, { path: '/services/:id', component: { render: () => null } }] })
}

describe('LoginView', () => {
  it('signs in and goes where it was asked to', async () => {
    mockFetch({
      'POST /api/v1/auth/login': json(tokenPair('a', 'r')),
      'GET /api/v1/auth/me': json(me(['services:read'])),
    })
    const r = router()
    await r.push('/login?next=/services/api')
    const wrapper = mount(LoginView, { global: { plugins: [pinia, r] } })
    await wrapper.find('input[name="username"]').setValue('dana')
    await wrapper.find('input[name="password"]').setValue('secret')
    await wrapper.find('form').trigger('submit')
    await flushPromises()
    expect(useAuthStore().isAuthenticated).toBe(true)
    expect(r.currentRoute.value.fullPath).toBe('/services/api')
  })

  it('shows the server message on bad credentials', async () => {
    mockFetch({ 'POST /api/v1/auth/login': { status: 401, body: { error: { code: 'invalid_credentials', message: 'wrong user name or password' } } } })
    const r = router()
    await r.push('/login')
    const wrapper = mount(LoginView, { global: { plugins: [pinia, r] } })
    await wrapper.find('input[name="username"]').setValue('dana')
    await wrapper.find('input[name="password"]').setValue('bad')
    await wrapper.find('form').trigger('submit')
    await flushPromises()
    expect(wrapper.find('[data-testid="login-error"]').text()).toBe('wrong user name or password')
  })
})

describe('InitializationView', () => {
  const empty = { items: [], next_cursor: null }

  it('moves per-component progress live and offers retry for a failed component', async () => {
    signedIn(['services:read', 'initialize_system'])
    mockFetch({ 'GET /api/v1/initializations': json(empty), 'GET /api/v1/services': json(empty) })
    const r = router()
    const wrapper = mount(InitializationView, { global: { plugins: [pinia, r] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="start-init"]').exists()).toBe(true)
    const init = useInitializationStore()
    init.updateStatus({
      run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 0, actor: 'a', options: {} as never, plan: [['db'], ['api']],
      components: {
        db: { name: 'db', status: 'STARTING', layer: 0, depends_on: [], attempts: 1 },
        api: { name: 'api', status: 'PENDING', layer: 1, depends_on: ['db'], attempts: 0 },
      },
      problems: [], message: '',
    } as never)
    await flushPromises()
    expect(wrapper.find('[data-component="db"]').attributes('data-status')).toBe('STARTING')
    init.updateStatus({ run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 50, component: 'db', component_status: 'HEALTHY', message: '' })
    init.updateStatus({ run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 50, component: 'api', component_status: 'FAILED', message: 'exit 1' })
    await flushPromises()
    expect(wrapper.find('[data-component="db"]').attributes('data-status')).toBe('HEALTHY')
    expect(wrapper.find('[role="progressbar"]').attributes('aria-valuenow')).toBe('50')
    expect(wrapper.find('[data-testid="retry-api"]').exists()).toBe(true)
    expect(wrapper.find('[data-testid="cancel-init"]').exists()).toBe(true)
  })

  it('shows a job with its exit code, duration and output, and each condition beside its dependency', async () => {
    signedIn(['services:read'])
    mockFetch({ 'GET /api/v1/initializations': json(empty), 'GET /api/v1/services': json(empty) })
    const wrapper = mount(InitializationView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    useInitializationStore().updateStatus({
      run_id: 'r2', workflow_id: 'init/r2', status: 'RUNNING', progress: 50, actor: 'a', options: {} as never,
      plan: [['migrate'], ['api']],
      components: {
        migrate: {
          name: 'migrate', kind: 'job', status: 'COMPLETED', layer: 0, depends_on: [], attempts: 1, exit_code: 0,
          duration: 1.25, log_tail: ['applied 3 migrations'],
        },
        api: {
          name: 'api', status: 'PENDING', layer: 1, depends_on: ['migrate'], attempts: 0,
          conditions: { migrate: 'completed_successfully' },
        },
      },
      problems: [], message: '',
    } as never)
    await flushPromises()
    const job = wrapper.find('[data-testid="job-migrate"]')
    expect(job.text()).toContain('exit 0')
    expect(job.text()).toContain('1.3 s')
    expect(job.find('pre').text()).toBe('applied 3 migrations')
    expect(wrapper.find('[data-component="api"] [data-testid="component-deps"]').text()).toBe('← migrate (completed successfully)')
  })

  it('a viewer sees the run but no start, cancel or retry', async () => {
    signedIn(['services:read'])
    mockFetch({ 'GET /api/v1/initializations': json(empty), 'GET /api/v1/services': json(empty) })
    const wrapper = mount(InitializationView, { global: { plugins: [pinia, router()] } })
    await flushPromises()
    useInitializationStore().updateStatus({
      run_id: 'r1', workflow_id: 'init/r1', status: 'RUNNING', progress: 10, actor: 'a', options: {} as never, plan: [],
      components: { api: { name: 'api', status: 'FAILED', layer: 0, depends_on: [], attempts: 1 } }, problems: [], message: '',
    } as never)
    await flushPromises()
    expect(wrapper.find('[data-testid="start-init"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="cancel-init"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="retry-api"]').exists()).toBe(false)
  })
})
