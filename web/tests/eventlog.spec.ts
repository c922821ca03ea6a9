import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it } from 'vitest'
import { useEventLogStore } from '@/stores/eventLog'
import EventsView from '@/views/EventsView.vue'
import { freshPinia, json, mockFetch, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})

function msg(id: string, type: string, data: Record<string, unknown>) {
  return { type: 'event', id, event: { event_id: `e${id}`, event_type: type, timestamp: '2026-12-06T10:00:00Z', data } }
}

describe('event log store', () => {
  it('asks for types, services and a time range, and pages on with next_after', async () => {
    const full = Array.from({ length: 100 }, (_, i) => msg(`${i + 1}-0`, 'CONFIG_CHANGED', { service_id: 'db', version: i + 1 }))
    const { calls } = mockFetch({
      'GET /api/v1/events': (c) => json(c.url.includes('after=') ? { items: [msg('101-0', 'CONFIG_CHANGED', {})], next_after: '101-0', gap: false } : { items: full, next_after: '100-0', gap: true }),
    })
    const s = useEventLogStore()
    await s.load({ types: ['CONFIG_CHANGED', 'AUDIT'], service: ' db ', range: { preset: '6h' } })
    const q = new URL(calls[0].url, 'http://x').searchParams
    expect(q.get('types')).toBe('CONFIG_CHANGED,AUDIT')
    expect(q.get('services')).toBe('db')
    expect(Date.parse(q.get('until')!) - Date.parse(q.get('since')!)).toBe(6 * 3_600_000)
    expect(s.more).toBe(true)
    expect(s.gap).toBe(true)
    await s.load({ types: [], service: '', range: null }, true)
    const q2 = new URL(calls[1].url, 'http://x').searchParams
    expect(q2.get('after')).toBe('100-0')
    expect(q2.has('since') || q2.has('types')).toBe(false)
    expect(s.items).toHaveLength(101)
    expect(s.more).toBe(false)
  })
})

describe('EventsView', () => {
  it('lists the last hour by default and reloads for another range', async () => {
    signedIn(['services:read'])
    const { calls } = mockFetch({
      'GET /api/v1/events': json({ items: [msg('1-0', 'SERVICE_STATUS_UPDATE', { service_id: 'api', state: 'healthy', previous_state: 'starting' })], next_after: '1-0', gap: false }),
    })
    const wrapper = mount(EventsView, { global: { plugins: [pinia] } })
    await flushPromises()
    const q = new URL(calls[0].url, 'http://x').searchParams
    expect(Date.parse(q.get('until')!) - Date.parse(q.get('since')!)).toBe(3_600_000)
    const row = wrapper.find('tr[data-type="SERVICE_STATUS_UPDATE"]')
    expect(row.text()).toContain('api')
    expect(row.text()).toContain('state: healthy')
    expect(wrapper.findAll('[data-testid="events-types"] option').map((o) => o.text())).not.toContain('AUDIT') // no audit:read
    await wrapper.find('[data-testid="events-range-all"]').trigger('click')
    await flushPromises()
    expect(new URL(calls.at(-1)!.url, 'http://x').searchParams.has('since')).toBe(false)
  })
})
