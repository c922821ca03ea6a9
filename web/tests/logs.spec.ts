import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import ServiceLogs from '@/components/ServiceLogs.vue'
import { freshPinia, json, mockFetch, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})
afterEach(() => {
  vi.useRealTimers()
})

describe('ServiceLogs', () => {
  it('shows the tail with stderr marked, asks for the chosen stream, and keeps following', async () => {
    signedIn(['services:read', 'logs:read'])
    let round = 0
    const { calls } = mockFetch({
      'GET /api/v1/services/api/logs': () => {
        round += 1
        return json({
          service: 'api',
          source: 'file',
          lines: [
            { stream: 'stdout', line: `listening (${round})`, at: null },
            { stream: 'stderr', line: 'warning: slow disk', at: null },
          ],
        })
      },
    })
    vi.useFakeTimers()
    const wrapper = mount(ServiceLogs, { props: { serviceId: 'api', pollMs: 1000 }, global: { plugins: [pinia] } })
    await flushPromises()
    const spans = () => wrapper.findAll('[data-testid="logs-lines"] span[data-stream]')
    expect(spans().map((s) => [s.attributes('data-stream'), s.text()])).toEqual([
      ['stdout', 'listening (1)'],
      ['stderr', 'warning: slow disk'],
    ])
    expect(spans()[1].classes()).toContain('stderr')
    expect(wrapper.text()).toContain("from the host's log files")
    await vi.advanceTimersByTimeAsync(1100)
    await flushPromises()
    expect(spans()[0].text()).toBe('listening (2)') // followed
    await wrapper.find('[data-testid="logs-stream"]').setValue('stderr')
    await flushPromises()
    const last = new URL(calls[calls.length - 1].url, 'http://localhost')
    expect(last.searchParams.get('stream')).toBe('stderr')
    expect(last.searchParams.get('lines')).toBe('200')
    await wrapper.find('[data-testid="logs-follow"]').setValue(false)
    const before = calls.length
    await vi.advanceTimersByTimeAsync(5000)
    expect(calls.length).toBe(before) // no more polling once follow is off
    wrapper.unmount()
  })

  it('says why when there are no logs to show', async () => {
    signedIn(['services:read', 'logs:read'])
    mockFetch({
      'GET /api/v1/services/db/logs': json(
        { error: { code: 'not_found', message: "no logs of service 'db' on this host", timestamp: '', details: null } },
        404,
      ),
    })
    const wrapper = mount(ServiceLogs, { props: { serviceId: 'db', pollMs: 60000 }, global: { plugins: [pinia] } })
    await flushPromises()
    expect(wrapper.find('[data-testid="logs-error"]').text()).toContain("no logs of service 'db'")
    wrapper.unmount()
  })
})
