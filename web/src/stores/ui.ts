import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type { UiConfig } from '@/api/types'
import { API, useApi } from '@/composables/useApi'

/** What the server tells the dashboard about itself (the Temporal Web UI's address). */
export const useUiStore = defineStore('ui', () => {
  const config = ref<UiConfig | null>(null)

  const temporalUrl = computed(() => (workflowId: string): string | null => {
    const c = config.value
    if (!c?.temporal_ui_url) return null
    return `${c.temporal_ui_url}/namespaces/${encodeURIComponent(c.temporal_namespace)}/workflows/${encodeURIComponent(workflowId)}`
  })

  async function load(): Promise<UiConfig | null> {
    try {
      config.value = await useApi().get<UiConfig>(`${API}/ui-config`)
    } catch {
      config.value = null
    }
    return config.value
  }

  return { config, temporalUrl, load }
})
