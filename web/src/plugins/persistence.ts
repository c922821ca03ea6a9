import { watch } from 'vue'
import { REFRESH_KEY, TOKEN_KEY, USER_KEY, useAuthStore } from '@/stores/auth'
import { CONFIG_CACHE_KEY, useConfigStore } from '@/stores/config'

function put(storage: Storage, key: string, value: string | null): void {
  if (value) storage.setItem(key, value)
  else storage.removeItem(key)
}

/** Keep the session across page loads; cache configs while signed in (the cache goes with the session). */
export function setupStorePersistence(storage: Storage = localStorage): void {
  const auth = useAuthStore()
  const config = useConfigStore()
  auth.restore(storage)

  watch(() => auth.token, (token) => put(storage, TOKEN_KEY, token), { flush: 'sync' })
  watch(() => auth.refreshTokenValue, (value) => put(storage, REFRESH_KEY, value), { flush: 'sync' })
  watch(() => auth.user, (user) => put(storage, USER_KEY, user ? JSON.stringify(user) : null), {
    flush: 'sync',
    deep: true,
  })
  // another tab signed in, rotated the tokens or signed out: follow it (a rotated refresh token is single-use)
  if (typeof window !== 'undefined') {
    window.addEventListener('storage', (event: StorageEvent) => {
      if (event.storageArea !== storage) return
      if (event.key === TOKEN_KEY) auth.token = event.newValue
      else if (event.key === REFRESH_KEY) auth.refreshTokenValue = event.newValue
      else if (event.key === USER_KEY && event.newValue) auth.restore(storage)
      else if (event.key === null) auth.clearSession() // storage.clear()
    })
  }
  watch(
    () => config.configs,
    (configs) => put(storage, CONFIG_CACHE_KEY, Object.keys(configs).length ? JSON.stringify(configs) : null),
    { deep: true, flush: 'sync' },
  )
}
