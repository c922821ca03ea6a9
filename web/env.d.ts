/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** Base URL of the API (default: same origin) */
  readonly VITE_API_URL?: string
  /** WebSocket URL of the event stream (default: same origin, /api/v1/ws) */
  readonly VITE_WS_URL?: string
}

interface ImportMeta {
  readonly env: ImportMetaEnv
}
