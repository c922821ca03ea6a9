import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import ShutdownButton from '@/components/ShutdownButton.vue'
import { freshPinia, json, mockFetch, signedIn } from './helpers'

let pinia: ReturnType<typeof freshPinia>
beforeEach(() => {
  pinia = freshPinia()
})
afterEach(() => {
  vi.useRealTimers()
})

function run(status: string, progress: number, statuses: Record<string, string>) {
  const layer: Record<string, number> = { web: 0, db: 1 }
  return {
    run_id: 'r1',
    workflow_id: 'down/r1',
    status,
    progress,
    state: {
      message: '',
      components: Object.fromEntries(Object.entries(statuses).map(([id, s]) => [id, {
        service_id: id, layer: layer[id], status: s, message: '', requested: id === 'db',
      }])),
    },
  }
}

describe('ShutdownButton', () => {
  it('asks, starts a shutdown of the service and its dependants, and follows it to the end', async () => {
    signedIn(['services:read', 'services:control'])
    const replies = [run('STOPPING', 50, { web: 'stopped', db: 'stopping' }), run('COMPLETED', 100, { web: 'stopped', db: 'stopped' })]
    const { calls } = mockFetch({
      'POST /api/v1/shutdowns': json({ run_id: 'r1', workflow_id: 'down/r1', status: 'PENDING' }, 202),
      'GET /api/v1/shutdowns/r1': () => json(replies.length > 1 ? replies.shift() : replies[0]),
    })
    vi.useFakeTimers()
    const wrapper = mount(ShutdownButton, { props: { services: ['db'], pollMs: 500 }, global: { plugins: [pinia] } })
    await wrapper.find('[data-testid="shutdown-open"]').trigger('click')
    expect(wrapper.find('[data-testid="confirm-dialog"]').text()).toContain('db and what depends on it')
    await wrapper.find('[data-testid="shutdown-reason"]').setValue('maintenance')
    await wrapper.find('[data-testid="confirm-ok"]').trigger('click')
    await flushPromises()
    const post = calls.find((c) => c.method === 'POST')
    expect(post?.body).toEqual({ services: ['db'], reason: 'maintenance' })
    expect(wrapper.find('[data-testid="shutdown-run"]').attributes('data-status')).toBe('STOPPING')
    expect(wrapper.findAll('li').map((li) => li.attributes('data-service'))).toEqual(['web', 'db']) // dependants first
    expect(wrapper.find('[data-testid="shutdown-cancel"]').exists()).toBe(true)
    await vi.advanceTimersByTimeAsync(600)
    await flushPromises()
    expect(wrapper.find('[data-testid="shutdown-run"]').attributes('data-status')).toBe('COMPLETED')
    expect(wrapper.find('[role="progressbar"]').attributes('data-tone')).toBe('succeeded')
    expect(wrapper.find('[data-testid="shutdown-cancel"]').exists()).toBe(false)
    wrapper.unmount()
  })

  it('is not offered without services:control', () => {
    signedIn(['services:read'])
    const wrapper = mount(ShutdownButton, { global: { plugins: [pinia] } })
    expect(wrapper.find('[data-testid="shutdown-open"]').exists()).toBe(false)
  })
})
