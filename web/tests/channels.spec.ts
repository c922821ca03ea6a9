import { flushPromises, mount } from '@vue/test-utils'
import { beforeEach, describe, expect, it } from 'vitest'
import { createMemoryHistory } from 'vue-router'
import { buildRouter } from '@/router'
import { durationSeconds, useChannelStore } from '@/stores/channels'
import { useNotificationStore } from '@/stores/notifications'
import ChannelsView from '@/views/ChannelsView.vue'
import { freshPinia, json, mockFetch, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})
const R = '**redacted**'
const EVENTS = ['escalated', 'gave_up', 'needs_decision', 'recovered', 'blocked']

function channel(name: string, extra: Record<string, unknown> = {}) {
  return { name, kind: 'webhook', url: 'https://pager.example/hook', headers: { Authorization: R }, timeout: '5s', events: EVENTS, source: 'stored', ...extra }
}
function delivery(id: number, delivered: boolean) {
  return { id, at: '2026-12-06T10:00:00Z', notification_id: `test-${id}`, channel: 'pager', kind: 'escalated', service_id: 'windflow', workflow_id: null, delivered, status_code: delivered ? 200 : 500, error: delivered ? null : 'HTTP 500' }
}

describe('durations', () => {
  it('reads the API’s durations as seconds', () => {
    expect([durationSeconds('5s'), durationSeconds('1.5m'), durationSeconds('250ms'), durationSeconds(7), durationSeconds('soon')]).toEqual([5, 90, 0.25, 7, null])
  })
})

describe('channel store', () => {
  it('creates, replaces, tests (reading the log again) and deletes', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/notification-channels': json([channel('ops-log', { kind: 'log', url: null, headers: {}, source: 'settings' })]),
      'POST /api/v1/notification-channels': (c) => json(channel((c.body as { name: string }).name), 201),
      'PUT /api/v1/notification-channels/pager': (c) => json(channel('pager', { timeout: `${(c.body as { timeout: number }).timeout}s` })),
      'POST /api/v1/notification-channels/pager/test': json({ channel: 'pager', delivered: false, status_code: 500, error: 'HTTP 500', attempts: 1 }),
      'GET /api/v1/notification-channels/pager/deliveries': json({ items: [delivery(2, false), delivery(1, true)], next_cursor: null }),
      'DELETE /api/v1/notification-channels/pager': { status: 204 },
    })
    const s = useChannelStore()
    await s.fetchChannels()
    await s.createChannel({ name: 'pager', kind: 'webhook', url: 'https://pager.example/hook', timeout: 5 })
    await s.updateChannel('pager', { kind: 'webhook', url: 'https://pager.example/hook', headers: { Authorization: R }, timeout: 9 })
    expect(calls.at(-1)?.body).toMatchObject({ headers: { Authorization: R } }) // the redacted value goes back as read
    expect(s.channels.map((c) => [c.name, c.timeout])).toEqual([['ops-log', '5s'], ['pager', '9s']])
    const result = await s.testChannel('pager')
    expect(result.delivered).toBe(false)
    expect(s.deliveries.pager.map((d) => d.id)).toEqual([2, 1])
    await s.deleteChannel('pager')
    expect(s.channels.map((c) => c.name)).toEqual(['ops-log'])
    expect(s.deliveries.pager).toBeUndefined()
  })
})

describe('ChannelsView', () => {
  it('adds a channel, edits it with the redacted header sent back, tests it and shows the log', async () => {
    signedIn(['configs:read', 'configs:write'])
    let list = [channel('ops-log', { kind: 'log', url: null, headers: {}, source: 'settings' })]
    const { calls } = mockFetch({
      'GET /api/v1/notification-channels': () => json(list),
      'POST /api/v1/notification-channels': (c) => {
        const b = c.body as { name: string; url: string; headers: Record<string, string> }
        const created = channel(b.name, { url: b.url, headers: Object.fromEntries(Object.keys(b.headers).map((k) => [k, R])) })
        list = [...list, created]
        return json(created, 201)
      },
      'PUT /api/v1/notification-channels/pager': (c) => json(channel('pager', { timeout: `${(c.body as { timeout: number }).timeout}s` })),
      'POST /api/v1/notification-channels/pager/test': json({ channel: 'pager', delivered: true, status_code: 200, error: null, attempts: 1 }),
      'GET /api/v1/notification-channels/pager/deliveries': json({ items: [delivery(1, true)], next_cursor: null }),
    })
    const wrapper = mount(ChannelsView, { global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('tr[data-channel="ops-log"]').text()).toContain('settings')
    expect(wrapper.find('[data-testid="channel-edit-ops-log"]').exists()).toBe(false) // settings: read-only

    await wrapper.find('[data-testid="channel-new"]').trigger('click')
    await wrapper.find('[data-testid="channel-name"]').setValue('pager')
    await wrapper.find('[data-testid="channel-url"]').setValue('https://pager.example/hook')
    await wrapper.find('[data-testid="channel-headers"]').setValue('Authorization: Bearer s3cret\nX-Team: sre')
    await wrapper.find('[data-testid="channel-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'POST')?.body).toMatchObject({ name: 'pager', kind: 'webhook', headers: { Authorization: 'Bearer s3cret', 'X-Team': 'sre' }, events: EVENTS })
    expect(wrapper.find('tr[data-channel="pager"]').text()).toContain(R)
    expect(wrapper.find('tr[data-channel="pager"]').text()).not.toContain('s3cret')

    await wrapper.find('[data-testid="channel-edit-pager"]').trigger('click')
    expect((wrapper.find('[data-testid="channel-headers"]').element as HTMLTextAreaElement).value).toContain(`Authorization: ${R}`)
    await wrapper.find('input[type="number"]').setValue(9)
    await wrapper.find('[data-testid="channel-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'PUT')?.body).toMatchObject({ headers: { Authorization: R }, timeout: 9 })
    expect(wrapper.find('tr[data-channel="pager"]').text()).toContain('9s')

    await wrapper.find('[data-testid="channel-test-pager"]').trigger('click')
    await flushPromises()
    expect(wrapper.find('[data-testid="channel-deliveries"] tr[data-delivered="true"]').text()).toContain('HTTP 200')
    expect(useNotificationStore().items[0].message).toContain('delivered to pager')
  })

  it('is read-only without configs:write', async () => {
    signedIn(['configs:read'])
    mockFetch({ 'GET /api/v1/notification-channels': json([channel('pager')]) })
    const wrapper = mount(ChannelsView, { global: { plugins: [pinia, buildRouter(createMemoryHistory())] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="channel-new"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="channel-test-pager"]').exists()).toBe(false)
    expect(wrapper.find('tr[data-channel="pager"]').exists()).toBe(true)
  })
})
