// Status bands from a service's stored status history (GET /services/{id}/status-history).
import type { StatusHistory } from '@/api/types'
import { healthOf, type HealthStatus } from '@/stores/services'

export interface Band {
  state: string
  tone: HealthStatus | 'NONE'
  start: number
  end: number
  /** share of the range, 0..1 */
  offset: number
  width: number
  source: string | null
  message: string | null
}

/**
 * One band per status in `[since, until)`: the status at `since` (none recorded yet: a 'no data' band), then one
 * per change until the next. Changes outside the range and same-status repeats are ignored.
 */
export function statusBands(h: Pick<StatusHistory, 'since' | 'until' | 'initial' | 'changes'>): Band[] {
  const since = new Date(h.since).getTime()
  const until = new Date(h.until).getTime()
  const total = until - since
  if (!(total > 0)) return []
  const points: Array<{ at: number; state: string; source: string | null; message: string | null }> = []
  points.push(h.initial
    ? { at: since, state: h.initial.state, source: h.initial.source ?? null, message: h.initial.message ?? null }
    : { at: since, state: '', source: null, message: null })
  for (const c of h.changes) {
    const at = new Date(c.at).getTime()
    if (at < since || at >= until) continue
    const last = points[points.length - 1]
    if (last.state === c.state) continue
    if (at === last.at) points.pop() // replaced at the same instant
    points.push({ at, state: c.state, source: c.source ?? null, message: c.message ?? null })
  }
  return points.map((p, i) => {
    const end = i + 1 < points.length ? points[i + 1].at : until
    return {
      state: p.state || 'no data',
      tone: p.state ? healthOf(p.state) : 'NONE',
      start: p.at,
      end,
      offset: (p.at - since) / total,
      width: (end - p.at) / total,
      source: p.source,
      message: p.message,
    }
  })
}

/** Share of the recorded time (no-data bands left out) spent in each tone. */
export function toneShares(bands: Band[]): Partial<Record<HealthStatus, number>> {
  const known = bands.filter((b) => b.tone !== 'NONE')
  const total = known.reduce((sum, b) => sum + (b.end - b.start), 0)
  const out: Partial<Record<HealthStatus, number>> = {}
  if (!total) return out
  for (const b of known) out[b.tone as HealthStatus] = (out[b.tone as HealthStatus] ?? 0) + (b.end - b.start) / total
  return out
}
