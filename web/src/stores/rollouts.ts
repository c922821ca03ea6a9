import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { RolloutPublic, RolloutUpdate } from '@/api/types'
import { API, useApi } from '@/composables/useApi'

export const ROLLOUT_TERMINAL = ['SUCCEEDED', 'ROLLED_BACK', 'FAILED', 'CANCELLED']

export function rolloutRunning(r: Pick<RolloutPublic, 'status'> | null | undefined): boolean {
  return !!r && !ROLLOUT_TERMINAL.includes(r.status)
}

const base = (serviceId: string) => `${API}/services/${encodeURIComponent(serviceId)}/rollouts`

/** A service's config rollouts (save, apply, verify, roll back on failure): the newest first. */
export const useRolloutStore = defineStore('rollouts', () => {
  const byService = ref<Record<string, RolloutPublic[]>>({})

  async function fetchRollouts(serviceId: string, limit = 10): Promise<RolloutPublic[]> {
    const page = await useApi().get<{ items: RolloutPublic[] }>(base(serviceId), { limit })
    byService.value[serviceId] = page.items
    return page.items
  }

  /** One rollout, live while it runs; replaces its row in the list (or puts it first). */
  async function fetchRollout(serviceId: string, rolloutId: string): Promise<RolloutPublic> {
    const r = await useApi().get<RolloutPublic>(`${base(serviceId)}/${encodeURIComponent(rolloutId)}`)
    remember(r)
    return r
  }

  function remember(r: RolloutPublic): void {
    const list = [...(byService.value[r.service_id] ?? [])]
    const i = list.findIndex((x) => x.rollout_id === r.rollout_id)
    if (i >= 0) list[i] = r
    else list.unshift(r)
    byService.value[r.service_id] = list
  }

  /** Cancel a running rollout: the service goes back to its last good version. */
  async function cancelRollout(serviceId: string, rolloutId: string): Promise<void> {
    await useApi().post(`${base(serviceId)}/${encodeURIComponent(rolloutId)}/cancel`)
  }

  /**
   * A ROLLOUT_UPDATE event: a rollout already listed moves on at once; one started elsewhere (CLI, API) is fetched.
   * Services whose rollouts nobody has looked at yet are left alone.
   */
  function onUpdate(data: RolloutUpdate): void {
    const list = byService.value[data.service_id]
    if (!list || !data.rollout_id) return
    const known = list.find((r) => r.rollout_id === data.rollout_id)
    if (known) {
      known.status = data.status as RolloutPublic['status']
      if (data.phase) known.phase = data.phase as RolloutPublic['phase']
      if (data.message) known.message = data.message
    }
    if (!known || ROLLOUT_TERMINAL.includes(data.status)) void fetchRollout(data.service_id, data.rollout_id).catch(() => undefined)
  }

  function latest(serviceId: string): RolloutPublic | null {
    return byService.value[serviceId]?.[0] ?? null
  }

  function clear(): void {
    byService.value = {}
  }

  return { byService, fetchRollouts, fetchRollout, cancelRollout, remember, onUpdate, latest, clear }
})
