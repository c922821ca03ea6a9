import { createApiClient, type ApiClient } from '@/api/http'
import { useAuthStore } from '@/stores/auth'

let client: ApiClient | null = null

/** The dashboard's one API client: the auth store's token on every request, refresh on 401. */
export function useApi(): ApiClient {
  client ??= createApiClient({
    baseUrl: import.meta.env.VITE_API_URL ?? '',
    getToken: () => useAuthStore().token,
    refresh: () => useAuthStore().refreshToken(),
    onAuthLost: () => useAuthStore().clearSession(),
  })
  return client
}

/** Forget the client (tests; a changed base URL). */
export function resetApi(): void {
  client = null
}

export const API = '/api/v1'
