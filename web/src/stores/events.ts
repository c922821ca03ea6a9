import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { WindflowEvent } from '@/api/types'

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'

export interface FeedItem {
  id: string
  event: WindflowEvent
}

/** The live event feed: connection state, the resume position and the most recent events. */
export const useEventStore = defineStore('events', () => {
  const recent = ref<FeedItem[]>([])
  const lastEventId = ref<string | null>(null)
  const connection = ref<ConnectionState>('idle')
  const reconnects = ref(0)
  const lastError = ref<string | null>(null)
  const MAX = 100

  function record(id: string, event: WindflowEvent): void {
    lastEventId.value = id
    if (event.event_type === 'METRICS_UPDATE') return // periodic figures: not news
    recent.value.unshift({ id, event })
    if (recent.value.length > MAX) recent.value.length = MAX
  }

  function clear(): void {
    recent.value = []
    lastEventId.value = null
    reconnects.value = 0
    lastError.value = null
    connection.value = 'idle'
  }

  return { recent, lastEventId, connection, reconnects, lastError, record, clear }
})
