import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { DeliveryPage, DeliveryPublic, WebhookCreate, WebhookCreated, WebhookPublic, WebhookUpdate } from '@/api/types'
import { API, useApi } from '@/composables/useApi'

const base = `${API}/webhooks`
const one = (id: string) => `${base}/${encodeURIComponent(id)}`

/**
 * Outgoing webhooks (subscriptions to windflow's events, signed as Standard Webhooks) and their delivery log.
 * The signing secret comes back once (create, rotate): `revealed` holds it until dismissed; lists never carry it.
 */
export const useWebhookStore = defineStore('webhooks', () => {
  const webhooks = ref<WebhookPublic[]>([])
  const deliveries = ref<Record<string, DeliveryPublic[]>>({})
  const cursors = ref<Record<string, string | null>>({})
  const revealed = ref<WebhookCreated | null>(null)
  const loaded = ref(false)

  async function fetchWebhooks(): Promise<WebhookPublic[]> {
    webhooks.value = await useApi().get<WebhookPublic[]>(base)
    loaded.value = true
    return webhooks.value
  }

  function remember(w: WebhookPublic): void {
    const plain: WebhookPublic = { ...w }
    delete (plain as Partial<WebhookCreated>).secret
    const i = webhooks.value.findIndex((x) => x.id === w.id)
    if (i >= 0) webhooks.value[i] = plain
    else webhooks.value = [...webhooks.value, plain]
  }

  async function createWebhook(body: WebhookCreate): Promise<WebhookCreated> {
    const created = await useApi().post<WebhookCreated>(base, body)
    remember(created)
    revealed.value = created
    return created
  }

  async function updateWebhook(id: string, body: WebhookUpdate): Promise<WebhookPublic> {
    const updated = await useApi().patch<WebhookPublic>(one(id), body)
    remember(updated)
    return updated
  }

  async function deleteWebhook(id: string): Promise<void> {
    await useApi().del(one(id))
    webhooks.value = webhooks.value.filter((w) => w.id !== id)
    delete deliveries.value[id]
    if (revealed.value?.id === id) revealed.value = null
  }

  async function rotateSecret(id: string): Promise<WebhookCreated> {
    const created = await useApi().post<WebhookCreated>(`${one(id)}/rotate-secret`)
    remember(created)
    revealed.value = created
    return created
  }

  /** The delivery log, newest first; `more` appends the next page. */
  async function fetchDeliveries(id: string, { more = false, state }: { more?: boolean; state?: string } = {}): Promise<DeliveryPublic[]> {
    const page = await useApi().get<DeliveryPage>(`${one(id)}/deliveries`, {
      limit: 25,
      state,
      cursor: more ? (cursors.value[id] ?? undefined) : undefined,
    })
    deliveries.value[id] = more ? [...(deliveries.value[id] ?? []), ...page.items] : page.items
    cursors.value[id] = page.next_cursor ?? null
    return deliveries.value[id]
  }

  function putFirst(d: DeliveryPublic): void {
    const list = (deliveries.value[d.webhook_id] ?? []).filter((x) => x.delivery_id !== d.delivery_id)
    deliveries.value[d.webhook_id] = [d, ...list]
  }

  /** Queue a delivery's payload again: a new delivery (new id) appears first in the log. */
  async function redeliver(id: string, deliveryId: string): Promise<DeliveryPublic> {
    const d = await useApi().post<DeliveryPublic>(`${one(id)}/deliveries/${encodeURIComponent(deliveryId)}/redeliver`)
    putFirst(d)
    return d
  }

  /** Send a signed PING now; the recorded delivery (delivered or failed) appears first in the log. */
  async function ping(id: string): Promise<DeliveryPublic> {
    const d = await useApi().post<DeliveryPublic>(`${one(id)}/ping`)
    putFirst(d)
    return d
  }

  function dismissSecret(): void {
    revealed.value = null
  }

  function clear(): void {
    webhooks.value = []
    deliveries.value = {}
    cursors.value = {}
    revealed.value = null
    loaded.value = false
  }

  return {
    clear,
    webhooks, deliveries, cursors, revealed, loaded,
    fetchWebhooks, createWebhook, updateWebhook, deleteWebhook, rotateSecret, fetchDeliveries, redeliver, ping, dismissSecret,
  }
})
