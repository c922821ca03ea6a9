import { createPinia, setActivePinia } from 'pinia'
import { vi } from 'vitest'
import { resetApi } from '@/composables/useApi'
import { useAuthStore } from '@/stores/auth'

export interface Call {
  method: string
  url: string
  path: string
  headers: Record<string, string>
  body: unknown
}

type Reply = { status?: number; body?: unknown; headers?: Record<string, string> }
type Handler = Reply | ((call: Call) => Reply | Promise<Reply>)

export function json(body: unknown, status = 200): Reply {
  return { status, body }
}

export function apiError(status: number, code: string, message = code): Reply {
  return { status, body: { error: { code, message, timestamp: '2026-01-01T00:00:00Z', details: null } } }
}

/** A fetch double routing "METHOD /path" (query ignored) to replies; records every call. */
export function mockFetch(routes: Record<string, Handler>) {
  const calls: Call[] = []
  const fn = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = String(input)
    const parsed = new URL(url, 'http://localhost')
    const method = (init.method ?? 'GET').toUpperCase()
    const headers = Object.fromEntries(Object.entries((init.headers ?? {}) as Record<string, string>))
    let body: unknown = init.body
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body)
      } catch {
        /* keep text */
      }
    }
    const call: Call = { method, url, path: parsed.pathname, headers, body }
    calls.push(call)
    const handler = routes[`${method} ${parsed.pathname}`]
    if (!handler) return new Response(JSON.stringify({ error: { code: 'not_found', message: `no route ${method} ${parsed.pathname}` } }), { status: 404, headers: { 'content-type': 'application/json' } })
    const reply = typeof handler === 'function' ? await handler(call) : handler
    const status = reply.status ?? 200
    if (status === 204) return new Response(null, { status })
    return new Response(JSON.stringify(reply.body ?? null), { status, headers: { 'content-type': 'application/json', ...(reply.headers ?? {}) } })
  })
  vi.stubGlobal('fetch', fn)
  return { fn, calls }
}

export function tokenPair(access: string, refresh: string) {
  return {
    access_token: access,
    token_type: 'bearer',
    expires_in: 900,
    expires_at: '2030-01-01T00:00:00Z',
    refresh_token: refresh,
    refresh_expires_at: '2030-01-02T00:00:00Z',
    session_id: 's1',
  }
}

export function me(permissions: string[], roles: string[] = ['operator'], username = 'dana') {
  return { username, kind: 'user', roles, permissions, token_id: 't', session_id: 's1', expires_at: null, user: null }
}

export function service(id: string, state = 'healthy', depends_on: string[] = [], extra: Record<string, unknown> = {}) {
  return {
    id,
    description: `${id} service`,
    labels: {},
    driver: 'process',
    config: {},
    depends_on,
    health: null,
    restart: {},
    monitored: true,
    restart_with_dependencies: false,
    host: null,
    secret_keys: [],
    version: 1,
    state,
    state_detail: {},
    state_changed_at: null,
    created_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    ...extra,
  }
}

export function memoryStorage(): Storage {
  const data = new Map<string, string>()
  return {
    get length() {
      return data.size
    },
    clear: () => data.clear(),
    getItem: (k: string) => data.get(k) ?? null,
    key: (i: number) => [...data.keys()][i] ?? null,
    removeItem: (k: string) => void data.delete(k),
    setItem: (k: string, v: string) => void data.set(k, String(v)),
  }
}

export const flush = () => new Promise((resolve) => setTimeout(resolve, 0))

/** A fresh active Pinia and API client (each test's setup); returns the Pinia for mount's `global.plugins`. */
export function freshPinia() {
  const pinia = createPinia()
  setActivePinia(pinia)
  resetApi()
  return pinia
}

/** Signs a user in with these permissions, without a server round trip. */
export function signedIn(permissions: string[]) {
  const auth = useAuthStore()
  auth.token = 't'
  auth.user = me(permissions) as never
}
