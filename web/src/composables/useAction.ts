import { ref } from 'vue'
import { useNotificationStore } from '@/stores/notifications'

/** Run a user action: `busy` while it runs, its failure shown as a notification (never thrown). */
export function useAction() {
  const busy = ref<string | null>(null)
  const notifications = useNotificationStore()

  async function run<T>(name: string, fn: () => Promise<T>, success?: string | ((result: T) => string)): Promise<T | undefined> {
    busy.value = name
    try {
      const result = await fn()
      if (success) notifications.add({ type: 'success', message: typeof success === 'function' ? success(result) : success })
      return result
    } catch (e) {
      notifications.add({ type: 'error', message: e instanceof Error ? e.message : String(e), timeout: 10000 })
      return undefined
    } finally {
      busy.value = null
    }
  }

  return { busy, run }
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return ''
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000)
  if (seconds < 60) return `${Math.max(0, seconds)} s ago`
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`
  return new Date(iso).toLocaleDateString()
}

export function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : '—'
}
