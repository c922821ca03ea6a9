/**
 * A service id as the API accepts it (the server's SERVICE_ID_PATTERN): lower-case letters, digits, `_` and `-`,
 * starting and ending with a letter or digit, at most 64 characters.
 *
 * Written for an HTML `pattern` attribute: browsers compile it as `^(?:…)$` with the `v` flag, where a bare `-`
 * inside a class is a syntax error (and an invalid pattern silently turns the check off), hence `\-`.
 */
export const SERVICE_ID_PATTERN = '[a-z0-9](?:[a-z0-9_\\-]{0,62}[a-z0-9])?'

/** The pattern as the browser applies it to a `pattern` attribute. */
export function patternRegExp(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`, 'v')
}

export function isServiceId(value: string): boolean {
  return patternRegExp(SERVICE_ID_PATTERN).test(value)
}
