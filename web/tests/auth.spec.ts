import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it } from 'vitest'
import { useApi } from '@/composables/useApi'
import { setupStorePersistence } from '@/plugins/persistence'
import { REFRESH_KEY, TOKEN_KEY, useAuthStore } from '@/stores/auth'
import { CONFIG_CACHE_KEY, useConfigStore } from '@/stores/config'
import { apiError, freshPinia, json, me, memoryStorage, mockFetch, tokenPair } from './helpers'

beforeEach(() => {
  freshPinia()
})

describe('auth store', () => {
  it('logs in: tokens, user and permissions', async () => {
    const { calls } = mockFetch({
      'POST /api/v1/auth/login': json(tokenPair('a1', 'r1')),
      'GET /api/v1/auth/me': json(me(['services:read', 'configs:read'], ['viewer'], 'dana.scully')),
    })
    const auth = useAuthStore()
    await auth.login({ username: 'dana.scully', password: 'pw' })
    expect(auth.isAuthenticated).toBe(true)
    expect(auth.token).toBe('a1')
    expect(auth.refreshTokenValue).toBe('r1')
    expect(auth.permissions).toEqual(['services:read', 'configs:read'])
    expect(auth.hasPermission('configs:read')).toBe(true)
    expect(auth.hasPermission('configs:write')).toBe(false)
    expect(auth.isAdmin).toBe(false)
    expect(auth.userInitials).toBe('DS')
    expect(calls[0].headers.Authorization).toBeUndefined()
    expect(calls[1].headers.Authorization).toBe('Bearer a1')
  })

  it('isAdmin for the admin role', async () => {
    mockFetch({
      'POST /api/v1/auth/login': json(tokenPair('a1', 'r1')),
      'GET /api/v1/auth/me': json(me(['services:read'], ['admin'], 'admin')),
    })
    const auth = useAuthStore()
    await auth.login({ username: 'admin', password: 'pw' })
    expect(auth.isAdmin).toBe(true)
    expect(auth.userInitials).toBe('AD')
  })

  it('a failed login leaves the store signed out', async () => {
    mockFetch({ 'POST /api/v1/auth/login': apiError(401, 'invalid_credentials', 'wrong user name or password') })
    const auth = useAuthStore()
    await expect(auth.login({ username: 'x', password: 'y' })).rejects.toMatchObject({ status: 401 })
    expect(auth.isAuthenticated).toBe(false)
  })

  it('refreshes once however many callers ask at the same time (rotated tokens are single-use)', async () => {
    const { calls } = mockFetch({ 'POST /api/v1/auth/refresh': json(tokenPair('a2', 'r2')) })
    const auth = useAuthStore()
    auth.token = 'a1'
    auth.refreshTokenValue = 'r1'
    await Promise.all([auth.refreshToken(), auth.refreshToken(), auth.refreshToken()])
    expect(calls).toHaveLength(1)
    expect(calls[0].body).toEqual({ refresh_token: 'r1' })
    expect(auth.token).toBe('a2')
    expect(auth.refreshTokenValue).toBe('r2')
  })

  it('a failed refresh signs out', async () => {
    mockFetch({ 'POST /api/v1/auth/refresh': apiError(401, 'invalid_refresh_token') })
    const auth = useAuthStore()
    auth.token = 'a1'
    auth.refreshTokenValue = 'r1'
    await expect(auth.refreshToken()).rejects.toBeTruthy()
    expect(auth.isAuthenticated).toBe(false)
    expect(auth.refreshTokenValue).toBeNull()
  })

  it('an expired access token is refreshed on 401 and the request replayed, through the shared client', async () => {
    const { calls } = mockFetch({
      'POST /api/v1/auth/refresh': json(tokenPair('fresh', 'r2')),
      'GET /api/v1/services': (c) => (c.headers.Authorization === 'Bearer fresh' ? json({ items: [], next_cursor: null }) : apiError(401, 'invalid_token')),
    })
    const auth = useAuthStore()
    auth.token = 'stale'
    auth.refreshTokenValue = 'r1'
    const results = await Promise.all([1, 2, 3].map(() => useApi().get('/api/v1/services')))
    expect(results).toHaveLength(3)
    expect(calls.filter((c) => c.path === '/api/v1/auth/refresh')).toHaveLength(1)
    expect(auth.token).toBe('fresh')
  })

  it('logs out: revokes the session, forgets tokens and the cached configs', async () => {
    const storage = memoryStorage()
    const { calls } = mockFetch({
      'POST /api/v1/auth/login': json(tokenPair('a1', 'r1')),
      'GET /api/v1/auth/me': json(me(['services:read'])),
      'POST /api/v1/auth/logout': { status: 204 },
    })
    setupStorePersistence(storage)
    const auth = useAuthStore()
    const config = useConfigStore()
    await auth.login({ username: 'dana', password: 'pw' })
    config.setDraft('api', { driver: 'process' })
    expect(storage.getItem(CONFIG_CACHE_KEY)).toContain('process')
    expect(storage.getItem(TOKEN_KEY)).toBe('a1')
    await auth.logout()
    const logout = calls.find((c) => c.path === '/api/v1/auth/logout')
    expect(logout?.body).toEqual({ refresh_token: 'r1' })
    expect(logout?.headers.Authorization).toBe('Bearer a1')
    expect(auth.isAuthenticated).toBe(false)
    expect(config.configs).toEqual({})
    expect(storage.getItem(TOKEN_KEY)).toBeNull()
    expect(storage.getItem(REFRESH_KEY)).toBeNull()
    expect(storage.getItem(CONFIG_CACHE_KEY)).toBeNull()
  })

  it('logout still signs out locally when the server cannot be reached', async () => {
    mockFetch({ 'POST /api/v1/auth/logout': apiError(503, 'unavailable') })
    const auth = useAuthStore()
    auth.token = 'a1'
    await auth.logout()
    expect(auth.isAuthenticated).toBe(false)
  })

  it('follows token changes made by another tab', () => {
    const storage = memoryStorage()
    setupStorePersistence(storage)
    const auth = useAuthStore()
    auth.token = 'a1'
    auth.refreshTokenValue = 'r1'
    const fire = (key: string | null, newValue: string | null) => {
      const event = new StorageEvent('storage', { key, newValue })
      Object.defineProperty(event, 'storageArea', { value: storage })
      window.dispatchEvent(event)
    }
    fire(TOKEN_KEY, 'a2')
    fire(REFRESH_KEY, 'r2')
    expect(auth.token).toBe('a2')
    expect(auth.refreshTokenValue).toBe('r2')
    fire(TOKEN_KEY, null)
    expect(auth.isAuthenticated).toBe(false)
  })

  it('keeps the session across a page reload', async () => {
    const storage = memoryStorage()
    mockFetch({
      'POST /api/v1/auth/login': json(tokenPair('a1', 'r1')),
      'GET /api/v1/auth/me': json(me(['services:read', 'audit:read'])),
    })
    setupStorePersistence(storage)
    await useAuthStore().login({ username: 'dana', password: 'pw' })

    setActivePinia(createPinia()) // a new page load
    setupStorePersistence(storage)
    const auth = useAuthStore()
    expect(auth.token).toBe('a1')
    expect(auth.refreshTokenValue).toBe('r1')
    expect(auth.hasPermission('audit:read')).toBe(true)
  })
})
