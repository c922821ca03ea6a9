import { defineStore } from 'pinia'
import { computed, ref } from 'vue'

export type NotificationType = 'info' | 'success' | 'warning' | 'error'

export interface Notification {
  id: number
  type: NotificationType
  message: string
  at: string
  read: boolean
}

export interface NotificationInput {
  type: NotificationType
  message: string
  /** milliseconds until it disappears on its own (0: stays; default 6 s, errors stay) */
  timeout?: number
}

export const useNotificationStore = defineStore('notifications', () => {
  const items = ref<Notification[]>([])
  let nextId = 1
  const MAX = 50

  const unread = computed(() => items.value.filter((n) => !n.read))
  const errors = computed(() => items.value.filter((n) => n.type === 'error'))

  function add(input: NotificationInput): number {
    const id = nextId++
    items.value.unshift({ id, type: input.type, message: input.message, at: new Date().toISOString(), read: false })
    if (items.value.length > MAX) items.value.length = MAX
    const timeout = input.timeout ?? (input.type === 'error' ? 0 : 6000)
    if (timeout > 0) setTimeout(() => dismiss(id), timeout)
    return id
  }

  function dismiss(id: number): void {
    items.value = items.value.filter((n) => n.id !== id)
  }

  function markAllRead(): void {
    items.value.forEach((n) => (n.read = true))
  }

  function clear(): void {
    items.value = []
  }

  return { items, unread, errors, add, dismiss, markAllRead, clear }
})
