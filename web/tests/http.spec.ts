import { describe, expect, it, vi } from 'vitest'
import { ApiError, buildUrl, createApiClient } from '@/api/http'
import { apiError, json, mockFetch } from './helpers'

describe('api client', () => {
  it('sends the bearer token and parses JSON', async () => {
    const { calls } = mockFetch({ 'GET /api/v1/services': json({ items: [], next_cursor: null }) })
    const client = createApiClient({ getToken: () => 'tok', refresh: vi.fn() })
    const page = await client.get<{ items: unknown[] }>('/api/v1/services', { limit: 5, q: undefined })
    expect(page.items).toEqual([])
    expect(calls[0].headers.Authorization).toBe('Bearer tok')
    expect(calls[0].url).toBe('/api/v1/services?limit=5')
  })

  it('leaves the token off when auth is false', async () => {
    const { calls } = mockFetch({ 'POST /api/v1/auth/login': json({ ok: true }) })
    const client = createApiClient({ getToken: () => 'tok', refresh: vi.fn() })
    await client.post('/api/v1/auth/login', { username: 'a' }, { auth: false })
    expect(calls[0].headers.Authorization).toBeUndefined()
    expect(calls[0].headers['Content-Type']).toBe('application/json')
    expect(calls[0].body).toEqual({ username: 'a' })
  })

  it('turns the error envelope into an ApiError', async () => {
    mockFetch({ 'GET /x': apiError(409, 'conflict', 'version 3 expected') })
    const client = createApiClient({ getToken: () => 't', refresh: vi.fn() })
    const error = await client.get('/x').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 409, code: 'conflict', message: 'version 3 expected' })
  })

  it('refreshes once for many concurrent 401s, then replays each request', async () => {
    let token = 'old'
    const { calls } = mockFetch({
      'GET /a': (c) => (c.headers.Authorization === 'Bearer new' ? json({ a: 1 }) : apiError(401, 'invalid_token')),
      'GET /b': (c) => (c.headers.Authorization === 'Bearer new' ? json({ b: 2 }) : apiError(401, 'invalid_token')),
      'GET /c': (c) => (c.headers.Authorization === 'Bearer new' ? json({ c: 3 }) : apiError(401, 'invalid_token')),
    })
    const refresh = vi.fn(async () => {
      await new Promise((r) => setTimeout(r, 10))
      token = 'new'
    })
    const client = createApiClient({ getToken: () => token, refresh })
    const results = await Promise.all([client.get('/a'), client.get('/b'), client.get('/c'), client.get('/a')])
    expect(results).toEqual([{ a: 1 }, { b: 2 }, { c: 3 }, { a: 1 }])
    expect(refresh).toHaveBeenCalledTimes(1)
    expect(calls.filter((c) => c.headers.Authorization === 'Bearer new')).toHaveLength(4)
    expect(client.refreshing).toBeNull()
  })

  it('replays without refreshing again when the token changed while the request was in flight', async () => {
    let token = 'old'
    mockFetch({ 'GET /a': (c) => (c.headers.Authorization === 'Bearer new' ? json({ ok: true }) : apiError(401, 'invalid_token')) })
    const refresh = vi.fn(async () => undefined)
    const client = createApiClient({
      getToken: () => token,
      refresh,
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const response = await fetch(input, init)
        token = 'new' // someone else refreshed meanwhile
        return response
      }) as typeof fetch,
    })
    expect(await client.get('/a')).toEqual({ ok: true })
    expect(refresh).not.toHaveBeenCalled()
  })

  it('signs out once the refresh fails, rejecting every waiting request with the 401', async () => {
    mockFetch({ 'GET /a': apiError(401, 'invalid_token', 'token expired') })
    const refresh = vi.fn(async () => {
      throw new Error('refresh token expired')
    })
    const onAuthLost = vi.fn()
    const client = createApiClient({ getToken: () => 'old', refresh, onAuthLost })
    const errors = await Promise.all([client.get('/a').catch((e) => e), client.get('/a').catch((e) => e)])
    expect(refresh).toHaveBeenCalledTimes(1)
    errors.forEach((e) => expect(e).toMatchObject({ status: 401, code: 'invalid_token' }))
    expect(onAuthLost).toHaveBeenCalled()
  })

  it('builds query strings with repeated keys and skips empty values', () => {
    expect(buildUrl('/api/', '/x', { label: ['a=1', 'b=2'], q: '', n: 0, ok: false })).toBe('/api/x?label=a%3D1&label=b%3D2&n=0&ok=false')
  })
})
