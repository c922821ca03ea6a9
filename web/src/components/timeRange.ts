// Time ranges shared by the state timeline and the audit log: a preset relative to now, or a custom span.

export type RangePreset = '15m' | '1h' | '6h' | '24h' | 'custom'

export const PRESETS: Array<{ id: Exclude<RangePreset, 'custom'>; label: string; ms: number }> = [
  { id: '15m', label: 'last 15 min', ms: 15 * 60_000 },
  { id: '1h', label: 'last 1 h', ms: 3_600_000 },
  { id: '6h', label: 'last 6 h', ms: 6 * 3_600_000 },
  { id: '24h', label: 'last 24 h', ms: 24 * 3_600_000 },
]

export interface TimeRange {
  preset: RangePreset
  /** datetime-local values (the browser's zone), for a custom range */
  from?: string
  to?: string
}

export interface ResolvedRange {
  since: Date
  until: Date
}

/** The instants a range stands for now; `null` for a custom range that is incomplete or backwards. */
export function resolveRange(range: TimeRange, now: Date = new Date()): ResolvedRange | null {
  if (range.preset !== 'custom') {
    const preset = PRESETS.find((p) => p.id === range.preset) ?? PRESETS[1]
    return { since: new Date(now.getTime() - preset.ms), until: now }
  }
  if (!range.from || !range.to) return null
  const since = new Date(range.from)
  const until = new Date(range.to)
  if (Number.isNaN(since.getTime()) || Number.isNaN(until.getTime()) || since >= until) return null
  return { since, until }
}

/** A Date as a datetime-local input value (local time, minutes). */
export function toLocalInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`
}

export function formatSpan(ms: number): string {
  const s = Math.round(ms / 1000)
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`
  const h = Math.floor(s / 3600)
  const m = Math.round((s % 3600) / 60)
  if (h < 48) return `${h} h${m ? ` ${m} min` : ''}`
  return `${Math.round(h / 24)} d`
}
