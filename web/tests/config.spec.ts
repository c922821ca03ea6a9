import { beforeEach, describe, expect, it } from 'vitest'
import { useAuthStore } from '@/stores/auth'
import { useConfigStore } from '@/stores/config'
import { apiError, freshPinia, json, mockFetch } from './helpers'

function version(v: number, content: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { service_id: 'api', version: v, content, content_hash: `h${v}`, author: 'dana', comment: '', reverted_from: null, status: 'active', created_at: '2026-01-01T00:00:00Z', ...extra }
}

const v1 = version(1, { driver: 'process', config: { command: ['a'] } })
const v2 = version(2, { driver: 'process', config: { command: ['b'] } })

beforeEach(() => {
  freshPinia()
  useAuthStore().token = 't'
})

describe('config store', () => {
  it('loads the current config and its history', async () => {
    mockFetch({
      'GET /api/v1/services/api/config': json(v2),
      'GET /api/v1/services/api/config/versions': json({ items: [v2, v1], next_cursor: null }),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    expect(config.configs.api).toEqual(v2.content)
    expect(config.latestVersion('api')).toBe('2')
    expect(config.versionsOf('api').map((v) => v.version)).toEqual([2, 1])
    expect(config.hasChanges('api')).toBe(false)
    expect(config.isValid('api')).toBe(true)
  })

  it('tracks edits and validates them', async () => {
    mockFetch({
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
      'POST /api/v1/services/api/config/validate': json({ valid: false, problems: [{ loc: ['health', 'port'], msg: 'must be > 0' }], order: null }),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    config.setDraft('api', { ...v1.content, health: { kind: 'tcp', port: 0 } })
    expect(config.hasChanges('api')).toBe(true)
    const result = await config.validateConfig('api', config.configs.api)
    expect(result.isValid).toBe(false)
    expect(config.isValid('api')).toBe(false)
    expect(config.validation.api.problems[0].loc).toEqual(['health', 'port'])
    config.discardChanges('api')
    expect(config.hasChanges('api')).toBe(false)
    expect(config.isValid('api')).toBe(true)
  })

  it('saves with a version check (If-Match and expected_version)', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
      'POST /api/v1/services/api/config/validate': json({ valid: true, problems: [], order: [['api']] }),
      'PUT /api/v1/services/api/config': json(v2),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    config.setDraft('api', { id: 'api', ...v2.content })
    const saved = await config.saveConfig('api', config.configs.api, 'new command')
    const put = calls.find((c) => c.method === 'PUT')
    expect(put?.headers['If-Match']).toBe('"1"')
    expect(put?.body).toEqual({ content: v2.content, expected_version: 1, comment: 'new command' })
    expect(saved.version).toBe(2)
    expect(config.current.api.version).toBe(2)
    expect(config.hasChanges('api')).toBe(false)
  })

  it('a save refused because someone else saved first keeps the edits', async () => {
    mockFetch({
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
      'POST /api/v1/services/api/config/validate': json({ valid: true, problems: [] }),
      'PUT /api/v1/services/api/config': apiError(409, 'conflict', 'version 2 is current, not 1'),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    config.setDraft('api', v2.content)
    await expect(config.saveConfig('api', v2.content)).rejects.toMatchObject({ status: 409 })
    expect(config.hasChanges('api')).toBe(true)
  })

  it('does not save an invalid config', async () => {
    const { calls } = mockFetch({
      'GET /api/v1/services/api/config': json(v1),
      'GET /api/v1/services/api/config/versions': json({ items: [v1], next_cursor: null }),
      'POST /api/v1/services/api/config/validate': json({ valid: false, problems: [{ loc: ['driver'], msg: 'unknown' }] }),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    await expect(config.saveConfig('api', { driver: 'nope' })).rejects.toThrow(/invalid/)
    expect(calls.some((c) => c.method === 'PUT')).toBe(false)
  })

  it('reverts to an older version', async () => {
    const v3 = version(3, v1.content, { reverted_from: 1 })
    const { calls } = mockFetch({
      'GET /api/v1/services/api/config': json(v2),
      'GET /api/v1/services/api/config/versions': () => json({ items: calls.some((x) => x.method === 'POST') ? [v3, v2, v1] : [v2, v1], next_cursor: null }),
      'POST /api/v1/services/api/config/revert': json(v3),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    await config.revertConfig('api', '1')
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({ version: 1, expected_version: 2, comment: '' })
    expect(config.current.api.version).toBe(3)
    expect(config.configs.api).toEqual(v1.content)
    expect(config.latestVersion('api')).toBe('3')
  })

  it('diffs versions and loads templates', async () => {
    mockFetch({
      'GET /api/v1/services/api/config/diff': (c) => json({ service_id: 'api', from_version: 1, to_version: 2, patch: [{ op: 'replace', path: '/config/command/0', value: c.url.includes('from=1') ? 'b' : '?' }] }),
      'GET /api/v1/config-templates': json([{ name: 'redis', description: 'Redis', parameters: [], content: {}, builtin: true }]),
    })
    const config = useConfigStore()
    const diff = await config.diffVersions('api', 1, 2)
    expect(diff.patch[0]).toMatchObject({ op: 'replace', value: 'b' })
    await config.loadTemplates()
    expect(config.templates.map((t) => t.name)).toEqual(['redis'])
  })

  it('instantiates a template (preview, then create)', async () => {
    const { calls } = mockFetch({
      'POST /api/v1/config-templates/redis/instantiate': (c) =>
        json({ service: { id: 'cache2', driver: 'process' }, created: (c.body as { create: boolean }).create }),
    })
    const config = useConfigStore()
    const preview = await config.instantiateTemplate('redis', 'cache2', { port: 6390 })
    expect(preview.created).toBe(false)
    const made = await config.instantiateTemplate('redis', 'cache2', { port: 6390 }, true)
    expect(made.created).toBe(true)
    expect(calls[1].body).toEqual({ service_id: 'cache2', parameters: { port: 6390 }, create: true })
  })

  it('reloads on CONFIG_CHANGED without local edits, marks it stale with edits; clear() forgets all', async () => {
    let current = v1
    mockFetch({
      'GET /api/v1/services/api/config': () => json(current),
      'GET /api/v1/services/api/config/versions': () => json({ items: [current], next_cursor: null }),
    })
    const config = useConfigStore()
    await config.loadConfig('api')
    current = v2
    config.onConfigChanged({ service_id: 'api', version: 2, author: 'x', comment: '', change: 'update' })
    await new Promise((r) => setTimeout(r, 0))
    expect(config.current.api.version).toBe(2)
    config.setDraft('api', { edited: true })
    config.onConfigChanged({ service_id: 'api', version: 3, author: 'x', comment: '', change: 'update' })
    expect(config.stale.api).toBe(3)
    config.clear()
    expect(config.configs).toEqual({})
    expect(config.history).toEqual([])
  })
})
