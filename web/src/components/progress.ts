export type ProgressTone = 'running' | 'succeeded' | 'failed' | 'cancelled'

/**
 * The colour a run's progress bar takes from the run's status: only a run that succeeded is green; a failed
 * run is red and a cancelled one grey, whatever percentage it had reached.
 */
export function progressTone(status: string | null | undefined): ProgressTone {
  switch ((status ?? '').toUpperCase()) {
    case 'SUCCEEDED':
      return 'succeeded'
    case 'FAILED':
    case 'ROLLED_BACK':
    case 'ROLLING_BACK':
      return 'failed'
    case 'CANCELLED':
    case 'CANCELLING':
      return 'cancelled'
    default:
      return 'running'
  }
}
