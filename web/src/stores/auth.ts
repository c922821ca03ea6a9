import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type { MePublic, Permission, TokenPair } from '@/api/types'
import { API, useApi } from '@/composables/useApi'
import { useConfigStore } from './config'

export interface Credentials {
  username: string
  password: string
}

export const TOKEN_KEY = 'auth_token'
export const REFRESH_KEY = 'auth_refresh_token'
export const USER_KEY = 'auth_user'

export const useAuthStore = defineStore('auth', () => {
  const user = ref<MePublic | null>(null)
  const token = ref<string | null>(null)
  const refreshTokenValue = ref<string | null>(null)
  const expiresAt = ref<string | null>(null)
  const permissions = computed<string[]>(() => user.value?.permissions ?? [])
  const isAuthenticated = computed(() => token.value !== null)
  let refreshing: Promise<void> | null = null

  const hasPermission = computed(() => (permission: Permission | string) => permissions.value.includes(permission))
  const isAdmin = computed(
    () => (user.value?.roles ?? []).includes('admin') || permissions.value.includes('users:manage'),
  )
  const userInitials = computed(() => {
    const name = user.value?.username ?? ''
    const parts = name.split(/[\s._-]+/).filter(Boolean)
    const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : name.slice(0, 2)
    return letters.toUpperCase()
  })

  function setTokens(pair: TokenPair): void {
    token.value = pair.access_token
    refreshTokenValue.value = pair.refresh_token
    expiresAt.value = pair.expires_at
  }

  function setUser(me: MePublic | null): void {
    user.value = me
  }

  /** Forget the session locally (no request): tokens, user, cached configs. */
  function clearSession(): void {
    token.value = null
    refreshTokenValue.value = null
    expiresAt.value = null
    setUser(null)
    useConfigStore().clear()
  }

  async function login(credentials: Credentials): Promise<void> {
    const pair = await useApi().post<TokenPair>(`${API}/auth/login`, credentials, { auth: false })
    setTokens(pair)
    await updatePermissions()
  }

  async function logout(): Promise<void> {
    const refresh = refreshTokenValue.value
    try {
      if (token.value) await useApi().post(`${API}/auth/logout`, refresh ? { refresh_token: refresh } : {})
    } catch {
      // signing out locally is what matters; the server session expires on its own
    } finally {
      clearSession()
    }
  }

  /** Trade the refresh token for a new pair; one refresh at a time (a rotated token must never be reused). */
  function refreshToken(): Promise<void> {
    if (refreshing) return refreshing
    refreshing = (async () => {
      const current = refreshTokenValue.value
      if (!current) {
        clearSession()
        throw new Error('no refresh token: sign in again')
      }
      try {
        const pair = await useApi().post<TokenPair>(`${API}/auth/refresh`, { refresh_token: current }, { auth: false })
        setTokens(pair)
      } catch (error) {
        clearSession()
        throw error
      }
    })().finally(() => {
      refreshing = null
    })
    return refreshing
  }

  async function updatePermissions(): Promise<void> {
    setUser(await useApi().get<MePublic>(`${API}/auth/me`))
  }

  /** Pick up a session saved by an earlier page load. */
  function restore(storage: Storage = localStorage): void {
    token.value = storage.getItem(TOKEN_KEY)
    refreshTokenValue.value = storage.getItem(REFRESH_KEY)
    const saved = storage.getItem(USER_KEY)
    if (token.value && saved) {
      try {
        setUser(JSON.parse(saved) as MePublic)
      } catch {
        setUser(null)
      }
    }
  }

  return {
    user,
    token,
    refreshTokenValue,
    expiresAt,
    permissions,
    isAuthenticated,
    hasPermission,
    isAdmin,
    userInitials,
    login,
    logout,
    refreshToken,
    updatePermissions,
    clearSession,
    restore,
  }
})
