import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { ChannelBody, ChannelCreate, ChannelDelivery, ChannelDeliveryPage, ChannelPublic, DeliveryResult } from '@/api/types'
import { API, useApi } from '@/composables/useApi'

const base = `${API}/notification-channels`
const one = (name: string) => `${base}/${encodeURIComponent(name)}`

/** "5s", "1.5m", "2h", "250ms" or a number: seconds. */
export function durationSeconds(value: string | number | null | undefined): number | null {
  if (typeof value === 'number') return value
  const m = /^\s*([\d.]+)\s*(ms|s|m|h)?\s*$/.exec(value ?? '')
  if (!m) return null
  const n = Number(m[1])
  return Number.isFinite(n) ? n * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? 's'] ?? 1) : null
}

/**
 * Notification channels (where escalations go) and each one's delivery log. Secrets come back redacted: an edit
 * sends the redacted values back unchanged and the API keeps the stored secret (same destination only).
 */
export const useChannelStore = defineStore('channels', () => {
  const channels = ref<ChannelPublic[]>([])
  const deliveries = ref<Record<string, ChannelDelivery[]>>({})
  const lastTest = ref<Record<string, DeliveryResult>>({})
  const loaded = ref(false)

  async function fetchChannels(): Promise<ChannelPublic[]> {
    channels.value = await useApi().get<ChannelPublic[]>(base)
    loaded.value = true
    return channels.value
  }

  function remember(c: ChannelPublic): void {
    const i = channels.value.findIndex((x) => x.name === c.name)
    if (i >= 0) channels.value[i] = c
    else channels.value = [...channels.value, c]
  }

  async function createChannel(body: ChannelCreate): Promise<ChannelPublic> {
    const c = await useApi().post<ChannelPublic>(base, body)
    remember(c)
    return c
  }

  async function updateChannel(name: string, body: ChannelBody): Promise<ChannelPublic> {
    const c = await useApi().put<ChannelPublic>(one(name), body)
    remember(c)
    return c
  }

  async function deleteChannel(name: string): Promise<void> {
    await useApi().del(one(name))
    channels.value = channels.value.filter((c) => c.name !== name)
    delete deliveries.value[name]
  }

  async function fetchDeliveries(name: string, limit = 20): Promise<ChannelDelivery[]> {
    const page = await useApi().get<ChannelDeliveryPage>(`${one(name)}/deliveries`, { limit })
    deliveries.value[name] = page.items
    return page.items
  }

  /** Send a test notification now; the delivery log is read again to show it. */
  async function testChannel(name: string): Promise<DeliveryResult> {
    const result = await useApi().post<DeliveryResult>(`${one(name)}/test`)
    lastTest.value[name] = result
    await fetchDeliveries(name).catch(() => undefined)
    return result
  }

  function clear(): void {
    channels.value = []
    deliveries.value = {}
    lastTest.value = {}
    loaded.value = false
  }

  return { channels, deliveries, lastTest, loaded, fetchChannels, createChannel, updateChannel, deleteChannel, fetchDeliveries, testChannel, clear }
})
