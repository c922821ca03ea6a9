// One HTTP client for the whole dashboard: the bearer token on every request, and on a 401 a single-flight
// token refresh (however many requests failed at once, one refresh runs; each of them is then replayed once).
import type { ErrorEnvelope } from './types'

export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly details: unknown

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.details = details
  }
}

export type Query = Record<string, string | number | boolean | null | undefined | Array<string | number>>

export interface RequestOptions {
  query?: Query
  body?: unknown
  headers?: Record<string, string>
  /** send the bearer token and refresh on 401 (default true) */
  auth?: boolean
  signal?: AbortSignal
}

export interface ClientOptions {
  baseUrl?: string
  getToken: () => string | null
  /** obtain a new access token (rejects when the session cannot be renewed) */
  refresh: () => Promise<void>
  /** the session is gone (refresh failed): sign out locally */
  onAuthLost?: () => void
  fetch?: typeof fetch
}

export interface ApiClient {
  request<T>(method: string, path: string, options?: RequestOptions): Promise<T>
  get<T>(path: string, query?: Query, options?: RequestOptions): Promise<T>
  post<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T>
  put<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T>
  patch<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T>
  del<T>(path: string, options?: RequestOptions): Promise<T>
  /** the refresh in flight, if any (tests and diagnostics) */
  readonly refreshing: Promise<void> | null
}

export function buildUrl(base: string, path: string, query?: Query): string {
  let url = base.replace(/\/$/, '') + path
  if (query) {
    const params = new URLSearchParams()
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined || value === null || value === '') continue
      if (Array.isArray(value)) value.forEach((v) => params.append(key, String(v)))
      else params.append(key, String(value))
    }
    const text = params.toString()
    if (text) url += (url.includes('?') ? '&' : '?') + text
  }
  return url
}

async function toError(response: Response): Promise<ApiError> {
  let body: unknown = null
  try {
    body = await response.json()
  } catch {
    body = null
  }
  const envelope = body as ErrorEnvelope | null
  if (envelope && typeof envelope === 'object' && envelope.error) {
    return new ApiError(response.status, envelope.error.code, envelope.error.message, envelope.error.details)
  }
  return new ApiError(response.status, `http_${response.status}`, response.statusText || `HTTP ${response.status}`)
}

export function createApiClient(options: ClientOptions): ApiClient {
  const base = options.baseUrl ?? ''
  let refreshing: Promise<void> | null = null

  function refreshOnce(): Promise<void> {
    if (!refreshing) {
      refreshing = options.refresh().finally(() => {
        refreshing = null
      })
    }
    return refreshing
  }

  async function send(method: string, path: string, opts: RequestOptions, token: string | null): Promise<Response> {
    const headers: Record<string, string> = { Accept: 'application/json', ...(opts.headers ?? {}) }
    let body: BodyInit | undefined
    if (opts.body !== undefined) {
      if (typeof opts.body === 'string') {
        body = opts.body
      } else {
        body = JSON.stringify(opts.body)
        headers['Content-Type'] = 'application/json'
      }
    }
    if (token) headers.Authorization = `Bearer ${token}`
    const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis)
    return doFetch(buildUrl(base, path, opts.query), { method, headers, body, signal: opts.signal })
  }

  async function request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const auth = opts.auth !== false
    let token = auth ? options.getToken() : null
    let response = await send(method, path, opts, token)
    if (response.status === 401 && auth) {
      // a refresh may already have happened while this request was in flight: then just replay
      if (options.getToken() === token || refreshing) {
        try {
          await refreshOnce()
        } catch {
          options.onAuthLost?.()
          throw await toError(response)
        }
      }
      token = options.getToken()
      if (!token) {
        options.onAuthLost?.()
        throw await toError(response)
      }
      response = await send(method, path, opts, token)
      if (response.status === 401) options.onAuthLost?.()
    }
    if (!response.ok) throw await toError(response)
    if (response.status === 204) return undefined as T
    const type = response.headers.get('content-type') ?? ''
    if (type.includes('json')) return (await response.json()) as T
    return (await response.text()) as T
  }

  return {
    request,
    get: (path, query, opts) => request('GET', path, { ...opts, query }),
    post: (path, body, opts) => request('POST', path, { ...opts, body }),
    put: (path, body, opts) => request('PUT', path, { ...opts, body }),
    patch: (path, body, opts) => request('PATCH', path, { ...opts, body }),
    del: (path, opts) => request('DELETE', path, opts),
    get refreshing() {
      return refreshing
    },
  }
}
