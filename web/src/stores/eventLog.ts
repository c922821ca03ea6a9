import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { components } from '@/api/schema'
import type { EventMessage } from '@/api/types'
import { resolveRange, type TimeRange } from '@/components/timeRange'
import { API, useApi } from '@/composables/useApi'

type EventPage = components['schemas']['EventPage']

export interface EventQuery {
  types: string[]
  service: string
  /** null: every retained event */
  range: TimeRange | null
}

/** The retained event stream read back (GET /events): filtered by type, service and time, paged with `after`. */
export const useEventLogStore = defineStore('eventLog', () => {
  const items = ref<EventMessage[]>([])
  const nextAfter = ref<string | null>(null)
  const more = ref(false)
  const gap = ref(false)
  const PAGE = 100

  async function load(q: EventQuery, append = false): Promise<EventMessage[]> {
    const span = q.range ? resolveRange(q.range) : null
    const page = await useApi().get<EventPage>(`${API}/events`, {
      types: q.types.length ? q.types.join(',') : undefined,
      services: q.service.trim() || undefined,
      since: span?.since.toISOString(),
      until: span?.until.toISOString(),
      after: append ? (nextAfter.value ?? undefined) : undefined,
      limit: PAGE,
    })
    items.value = append ? [...items.value, ...page.items] : page.items
    nextAfter.value = page.next_after ?? null
    more.value = page.items.length >= PAGE
    gap.value = page.gap
    return items.value
  }

  function clear(): void {
    items.value = []
    nextAfter.value = null
    more.value = false
    gap.value = false
  }

  return { items, nextAfter, more, gap, load, clear }
})
