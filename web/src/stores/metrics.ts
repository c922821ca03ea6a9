import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type { MetricsUpdate } from '@/api/types'

export interface MetricsPoint {
  at: string
  latency_ms: number | null
  availability_1h: number | null
}

export const useMetricsStore = defineStore('metrics', () => {
  const metrics = ref<Record<string, MetricsUpdate & { at: string }>>({})
  const history = ref<Record<string, MetricsPoint[]>>({})
  const MAX_POINTS = 120

  const availability = computed(() => {
    const values = Object.values(metrics.value)
      .map((m) => m.availability_1h)
      .filter((v): v is number => typeof v === 'number')
    return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null
  })
  const totalRestarts = computed(() => Object.values(metrics.value).reduce((sum, m) => sum + (m.restarts ?? 0), 0))

  function updateMetrics(data: MetricsUpdate, at: string = new Date().toISOString()): void {
    metrics.value[data.service_id] = { ...data, at }
    const points = (history.value[data.service_id] ??= [])
    points.push({ at, latency_ms: data.latency_ms ?? null, availability_1h: data.availability_1h ?? null })
    if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS)
  }

  function clear(): void {
    metrics.value = {}
    history.value = {}
  }

  return { metrics, history, availability, totalRestarts, updateMetrics, clear }
})
