import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { AlertLogPublic, HookCreate, HookCreated, HookPublic, HookUpdate } from '@/api/types'
import { API, useApi } from '@/composables/useApi'

const base = `${API}/hooks`
const one = (id: string) => `${base}/${encodeURIComponent(id)}`

/**
 * Incoming alert hooks (Alertmanager or generic JSON) and the alerts each received. A hook's token and signing
 * secret are returned once, by create and rotate: `revealed` holds them until the operator dismisses them.
 */
export const useHookStore = defineStore('hooks', () => {
  const hooks = ref<HookPublic[]>([])
  const alerts = ref<Record<string, AlertLogPublic[]>>({})
  const revealed = ref<HookCreated | null>(null)
  const loaded = ref(false)

  async function fetchHooks(): Promise<HookPublic[]> {
    hooks.value = await useApi().get<HookPublic[]>(base)
    loaded.value = true
    return hooks.value
  }

  async function fetchAlerts(id: string, limit = 20): Promise<AlertLogPublic[]> {
    const items = await useApi().get<AlertLogPublic[]>(`${one(id)}/alerts`, { limit })
    alerts.value[id] = items
    return items
  }

  function remember(h: HookPublic): void {
    const i = hooks.value.findIndex((x) => x.id === h.id)
    const plain: HookPublic = { ...h }
    delete (plain as Partial<HookCreated>).token
    delete (plain as Partial<HookCreated>).signing_secret
    if (i >= 0) hooks.value[i] = plain
    else hooks.value = [...hooks.value, plain].sort((a, b) => a.name.localeCompare(b.name))
  }

  async function createHook(body: HookCreate): Promise<HookCreated> {
    const created = await useApi().post<HookCreated>(base, body)
    remember(created)
    revealed.value = created
    return created
  }

  async function updateHook(id: string, body: HookUpdate): Promise<HookPublic> {
    const updated = await useApi().patch<HookPublic>(one(id), body)
    remember(updated)
    return updated
  }

  async function rotateToken(id: string): Promise<HookCreated> {
    const created = await useApi().post<HookCreated>(`${one(id)}/rotate-token`)
    remember(created)
    revealed.value = created
    return created
  }

  async function deleteHook(id: string): Promise<void> {
    await useApi().del(one(id))
    hooks.value = hooks.value.filter((h) => h.id !== id)
    delete alerts.value[id]
    if (revealed.value?.id === id) revealed.value = null
  }

  function dismissSecret(): void {
    revealed.value = null
  }

  function clear(): void {
    hooks.value = []
    alerts.value = {}
    revealed.value = null
    loaded.value = false
  }

  return { clear, hooks, alerts, revealed, loaded, fetchHooks, fetchAlerts, createHook, updateHook, rotateToken, deleteHook, dismissSecret }
})
