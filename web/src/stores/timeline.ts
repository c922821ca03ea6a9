import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { ServiceStatusUpdate, StatusChange, StatusHistory } from '@/api/types'
import { PRESETS, resolveRange, type TimeRange } from '@/components/timeRange'
import { API, useApi } from '@/composables/useApi'

/**
 * Each service's state timeline: its stored status history over the chosen range (GET …/status-history). A
 * range relative to now stays live: SERVICE_STATUS_UPDATE events append their change and `slide` moves the
 * window on (changes that fall out of it become the status at its start), without asking the server again.
 */
export const useTimelineStore = defineStore('timeline', () => {
  const histories = ref<Record<string, StatusHistory>>({})
  const ranges = ref<Record<string, TimeRange>>({})
  const errors = ref<Record<string, string | null>>({})

  function rangeOf(serviceId: string): TimeRange {
    return ranges.value[serviceId] ?? { preset: '1h' }
  }

  async function fetchHistory(serviceId: string, range: TimeRange = rangeOf(serviceId)): Promise<StatusHistory | null> {
    ranges.value[serviceId] = range
    const resolved = resolveRange(range)
    if (!resolved) {
      errors.value[serviceId] = 'Choose a start before the end.'
      return null
    }
    try {
      const h = await useApi().get<StatusHistory>(`${API}/services/${encodeURIComponent(serviceId)}/status-history`, {
        since: resolved.since.toISOString(),
        until: resolved.until.toISOString(),
      })
      histories.value[serviceId] = h
      errors.value[serviceId] = null
      return h
    } catch (e) {
      errors.value[serviceId] = e instanceof Error ? e.message : String(e)
      return null
    }
  }

  /** A live status change: appended to the timeline of a service shown over a range ending now. */
  function onStatus(data: Pick<ServiceStatusUpdate, 'service_id' | 'state' | 'previous_state' | 'source' | 'message' | 'since'>, at?: string): void {
    const h = histories.value[data.service_id]
    if (!h || rangeOf(data.service_id).preset === 'custom') return
    const last = h.changes.length ? h.changes[h.changes.length - 1].state : h.initial?.state
    h.current_state = data.state
    if (last === data.state) return
    const when = data.since ?? at ?? new Date().toISOString()
    if (new Date(when) < new Date(h.since)) return
    const change: StatusChange = { at: when, state: data.state, previous_state: data.previous_state ?? null, source: data.source || null, message: data.message || null }
    h.changes.push(change)
    if (new Date(when) >= new Date(h.until)) h.until = new Date(new Date(when).getTime() + 1).toISOString()
  }

  /** Move a relative range's window to end now: changes before its new start become the status at its start. */
  function slide(serviceId: string, now: Date = new Date()): void {
    const h = histories.value[serviceId]
    const range = rangeOf(serviceId)
    if (!h || range.preset === 'custom') return
    const ms = PRESETS.find((p) => p.id === range.preset)?.ms ?? 3_600_000
    const since = new Date(now.getTime() - ms)
    let initial = h.initial
    const kept: StatusChange[] = []
    for (const c of h.changes) {
      if (new Date(c.at) < since) initial = c
      else kept.push(c)
    }
    h.initial = initial ?? null
    h.changes = kept
    h.since = since.toISOString()
    h.until = now.toISOString()
  }

  function clear(): void {
    histories.value = {}
    ranges.value = {}
    errors.value = {}
  }

  return { histories, ranges, errors, rangeOf, fetchHistory, onStatus, slide, clear }
})
