import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createMemoryHistory } from 'vue-router'
import StatusTimeline from '@/components/StatusTimeline.vue'
import { statusBands, toneShares } from '@/components/timeline'
import { formatSpan, resolveRange } from '@/components/timeRange'
import { buildRouter } from '@/router'
import { useTimelineStore } from '@/stores/timeline'
import AuditView from '@/views/AuditView.vue'
import { freshPinia, json, mockFetch, signedIn, apiError } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})
afterEach(() => vi.useRealTimers())

const T0 = Date.parse('2026-12-06T10:00:00Z')
const iso = (minutes: number) => new Date(T0 + minutes * 60_000).toISOString()
const change = (minutes: number, state: string, previous: string | null = null) => ({ at: iso(minutes), state, previous_state: previous, source: 'watcher', message: null })

function historyBody(extra: Record<string, unknown> = {}) {
  return {
    service_id: 'api', since: iso(0), until: iso(60), initial: change(-30, 'healthy'),
    changes: [change(15, 'unhealthy', 'healthy'), change(18, 'recovering', 'unhealthy'), change(20, 'healthy', 'recovering')],
    truncated: false, current_state: 'healthy', retention_days: 30, ...extra,
  }
}

describe('status bands', () => {
  it('cut the range at each change, starting with the status at its start', () => {
    const bands = statusBands(historyBody())
    expect(bands.map((b) => [b.state, b.tone, Math.round(b.offset * 60), Math.round(b.width * 60)])).toEqual([
      ['healthy', 'HEALTHY', 0, 15], ['unhealthy', 'FAILED', 15, 3], ['recovering', 'FAILED', 18, 2], ['healthy', 'HEALTHY', 20, 40],
    ])
    expect(bands.reduce((s, b) => s + b.width, 0)).toBeCloseTo(1)
    const shares = toneShares(bands)
    expect(shares.HEALTHY).toBeCloseTo(55 / 60)
    expect(shares.FAILED).toBeCloseTo(5 / 60)
  })

  it('show no data before the first recorded status, and skip repeats and changes outside the range', () => {
    const bands = statusBands(historyBody({ initial: null, changes: [change(10, 'starting'), change(12, 'starting'), change(30, 'healthy'), change(70, 'stopped')] }))
    expect(bands.map((b) => [b.state, b.tone])).toEqual([['no data', 'NONE'], ['starting', 'DEGRADED'], ['healthy', 'HEALTHY']])
    expect(toneShares(bands).HEALTHY).toBeCloseTo(30 / 50)
    expect(statusBands(historyBody({ until: iso(0) }))).toEqual([])
  })
})

describe('time ranges', () => {
  it('resolve presets against now and refuse a backwards custom range', () => {
    const now = new Date(T0)
    expect(resolveRange({ preset: '15m' }, now)).toEqual({ since: new Date(T0 - 15 * 60_000), until: now })
    expect(resolveRange({ preset: '24h' }, now)?.since).toEqual(new Date(T0 - 86_400_000))
    expect(resolveRange({ preset: 'custom', from: '2026-12-06T10:00', to: '2026-12-06T09:00' })).toBeNull()
    expect(resolveRange({ preset: 'custom', from: '2026-12-06T10:00' })).toBeNull()
    expect(resolveRange({ preset: 'custom', from: '2026-12-06T09:00', to: '2026-12-06T10:00' })?.until).toEqual(new Date('2026-12-06T10:00'))
    expect([formatSpan(42_000), formatSpan(150_000), formatSpan(7_260_000), formatSpan(5 * 86_400_000)]).toEqual(['42 s', '2 min 30 s', '2 h 1 min', '5 d'])
  })
})

describe('timeline store', () => {
  it('asks for the chosen range, follows live changes and slides the window along', async () => {
    vi.useFakeTimers({ now: T0 + 60 * 60_000 })
    const { calls } = mockFetch({ 'GET /api/v1/services/api/status-history': json(historyBody()) })
    const s = useTimelineStore()
    await s.fetchHistory('api', { preset: '1h' })
    const url = new URL(calls[0].url, 'http://x')
    expect(url.searchParams.get('until')).toBe(iso(60))
    expect(url.searchParams.get('since')).toBe(iso(0))

    s.onStatus({ service_id: 'api', state: 'healthy', previous_state: 'healthy', source: 'watcher', message: 'still', since: iso(59) })
    expect(s.histories.api.changes).toHaveLength(3) // not a change
    s.onStatus({ service_id: 'api', state: 'stopped', previous_state: 'healthy', source: 'control', message: '', since: iso(61) })
    expect(s.histories.api.changes.at(-1)).toMatchObject({ state: 'stopped', source: 'control', message: null })
    expect(s.histories.api.current_state).toBe('stopped')

    s.slide('api', new Date(T0 + 79 * 60_000)) // the window is now 19:00..79:00 (minutes)
    expect(s.histories.api.initial?.state).toBe('recovering')
    expect(s.histories.api.changes.map((c) => c.state)).toEqual(['healthy', 'stopped'])
    expect(s.histories.api.since).toBe(iso(19))
  })

  it('leaves a custom range alone and keeps an API refusal as the error', async () => {
    mockFetch({ 'GET /api/v1/services/api/status-history': apiError(422, 'validation_error', 'since must be before until') })
    const s = useTimelineStore()
    expect(await s.fetchHistory('api', { preset: 'custom', from: '2026-12-06T10:00', to: '2026-12-06T11:00' })).toBeNull()
    expect(s.errors.api).toBe('since must be before until')
    expect(await s.fetchHistory('api', { preset: 'custom', from: '2026-12-06T11:00', to: '2026-12-06T10:00' })).toBeNull()
    expect(s.errors.api).toContain('before the end')
    s.histories.api = historyBody() as never
    s.onStatus({ service_id: 'api', state: 'stopped', previous_state: 'healthy', source: 'x', message: '', since: iso(30) })
    expect(s.histories.api.changes).toHaveLength(3)
  })
})

describe('StatusTimeline', () => {
  it('draws the bands and refetches when another range is chosen', async () => {
    signedIn(['services:read'])
    const { calls } = mockFetch({ 'GET /api/v1/services/api/status-history': json(historyBody()) })
    const wrapper = mount(StatusTimeline, { props: { serviceId: 'api' }, global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    const bands = wrapper.findAll('[data-testid="timeline-band"]')
    expect(bands.map((b) => b.attributes('data-state'))).toEqual(['healthy', 'unhealthy', 'recovering', 'healthy'])
    expect(bands[1].classes()).toContain('tone-failed')
    expect(bands[1].attributes('style')).toContain('left: 25%')
    expect(bands[1].attributes('title')).toContain('by watcher')
    expect(wrapper.find('[data-tone="HEALTHY"]').text()).toContain('91.7%')
    expect(wrapper.text()).toContain('3 changes in range')

    await wrapper.find('[data-testid="timeline-range-6h"]').trigger('click')
    await flushPromises()
    const last = new URL(calls.at(-1)!.url, 'http://x')
    const span = Date.parse(last.searchParams.get('until')!) - Date.parse(last.searchParams.get('since')!)
    expect(span).toBe(6 * 3_600_000)

    await wrapper.find('[data-testid="timeline-range-custom"]').trigger('click')
    await wrapper.find('[data-testid="timeline-range-from"]').setValue('2026-12-06T12:00')
    await wrapper.find('[data-testid="timeline-range-to"]').setValue('2026-12-06T11:00')
    await wrapper.find('[data-testid="timeline-range-apply"]').trigger('click')
    expect(wrapper.find('[data-testid="timeline-range-problem"]').text()).toContain('before the end')
    const before = calls.length
    await wrapper.find('[data-testid="timeline-range-to"]').setValue('2026-12-06T13:30')
    await wrapper.find('[data-testid="timeline-range-apply"]').trigger('click')
    await flushPromises()
    expect(calls.length).toBe(before + 1)
    expect(new URL(calls.at(-1)!.url, 'http://x').searchParams.get('since')).toBe(new Date('2026-12-06T12:00').toISOString())
    wrapper.unmount()
  })
})

describe('AuditView time range', () => {
  it('asks for all time by default and for the chosen range after', async () => {
    signedIn(['audit:read'])
    const { calls } = mockFetch({ 'GET /api/v1/audit': json({ items: [], next_cursor: null }) })
    const wrapper = mount(AuditView, { global: { plugins: [pinia] } })
    await flushPromises()
    expect(new URL(calls[0].url, 'http://x').searchParams.has('since')).toBe(false)
    await wrapper.find('[data-testid="audit-range-24h"]').trigger('click')
    await flushPromises()
    const q = new URL(calls.at(-1)!.url, 'http://x').searchParams
    expect(Date.parse(q.get('until')!) - Date.parse(q.get('since')!)).toBe(86_400_000)
    await wrapper.find('[data-testid="audit-range-all"]').trigger('click')
    await flushPromises()
    expect(new URL(calls.at(-1)!.url, 'http://x').searchParams.has('since')).toBe(false)
  })
})
