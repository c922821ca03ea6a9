import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type {
  ConfigChanged,
  ConfigDiff,
  ConfigVersionPage,
  ConfigVersionPublic,
  RolloutPublic,
  TemplatePublic,
  ValidationReport,
} from '@/api/types'
import { API, useApi } from '@/composables/useApi'

export type ConfigTemplate = TemplatePublic
export type ConfigHistory = ConfigVersionPublic

export interface ValidationResult {
  isValid: boolean
  problems: Array<{ loc?: Array<string | number>; msg?: string; [key: string]: unknown }>
  order: string[][] | null
}

export const CONFIG_CACHE_KEY = 'config_cache'

function path(serviceId: string): string {
  return `${API}/services/${encodeURIComponent(serviceId)}/config`
}

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

export function toValidation(report: ValidationReport): ValidationResult {
  return {
    isValid: report.valid,
    problems: (report.problems ?? []) as ValidationResult['problems'],
    order: report.order ?? null,
  }
}

export const useConfigStore = defineStore('config', () => {
  /** the working copy of each service's config (what the editor edits) */
  const configs = ref<Record<string, Record<string, unknown>>>({})
  /** the current version as stored on the server */
  const current = ref<Record<string, ConfigVersionPublic>>({})
  const templates = ref<ConfigTemplate[]>([])
  const validation = ref<Record<string, ValidationResult>>({})
  const history = ref<ConfigHistory[]>([])
  /** services whose config changed on the server since it was loaded here */
  const stale = ref<Record<string, number>>({})

  const isValid = computed(() => (serviceId: string) => validation.value[serviceId]?.isValid ?? true)
  const hasChanges = computed(
    () => (serviceId: string) =>
      serviceId in configs.value && !same(configs.value[serviceId], current.value[serviceId]?.content),
  )
  const latestVersion = computed(() => (serviceId: string): string => {
    const versions = history.value.filter((h) => h.service_id === serviceId).map((h) => h.version)
    if (current.value[serviceId]) versions.push(current.value[serviceId].version)
    return versions.length ? String(Math.max(...versions)) : ''
  })
  const versionsOf = computed(
    () => (serviceId: string) =>
      history.value.filter((h) => h.service_id === serviceId).sort((a, b) => b.version - a.version),
  )

  function setCurrent(version: ConfigVersionPublic): void {
    current.value[version.service_id] = version
    configs.value[version.service_id] = clone(version.content)
    delete stale.value[version.service_id]
    mergeHistory([version])
  }

  function mergeHistory(items: ConfigVersionPublic[]): void {
    for (const item of items) {
      const index = history.value.findIndex((h) => h.service_id === item.service_id && h.version === item.version)
      if (index >= 0) history.value[index] = item
      else history.value.push(item)
    }
  }

  async function loadConfig(serviceId: string): Promise<void> {
    const version = await useApi().get<ConfigVersionPublic>(path(serviceId))
    setCurrent(version)
    delete validation.value[serviceId]
    await loadHistory(serviceId)
  }

  async function loadHistory(serviceId: string, limit = 50): Promise<ConfigHistory[]> {
    const page = await useApi().get<ConfigVersionPage>(`${path(serviceId)}/versions`, { limit })
    history.value = history.value.filter((h) => h.service_id !== serviceId)
    mergeHistory(page.items)
    // a version this page just saved may not be in a list read right after it: keep it
    const known = current.value[serviceId]
    if (known && !page.items.some((v) => v.version === known.version)) mergeHistory([known])
    return page.items
  }

  /** Save a new version; refused (409) when someone saved another version since this one was loaded. */
  async function saveConfig(serviceId: string, config: Record<string, unknown>, comment = ''): Promise<ConfigVersionPublic> {
    const expected = current.value[serviceId]?.version
    if (expected === undefined) throw new Error(`load the config of ${serviceId} first`)
    const result = await validateConfig(serviceId, config)
    if (!result.isValid) throw new Error(`the config of ${serviceId} is invalid`)
    const { id: _id, ...content } = config
    void _id
    const saved = await useApi().put<ConfigVersionPublic>(
      path(serviceId),
      { content, expected_version: expected, comment },
      { headers: { 'If-Match': `"${expected}"` } },
    )
    setCurrent(saved)
    return saved
  }

  /**
   * Save and apply: a rollout (`rollout/{service}`) saves the config as a new version, applies it, verifies its
   * health and rolls back to the last good version if it fails. Sending the saved config of a pending version
   * applies that version.
   */
  async function applyConfig(serviceId: string, config: Record<string, unknown>, comment = ''): Promise<RolloutPublic> {
    const { id: _id, ...content } = config
    void _id
    return useApi().post<RolloutPublic>(`${API}/services/${encodeURIComponent(serviceId)}/rollouts`, {
      config: content,
      comment,
      expected_version: current.value[serviceId]?.version ?? null,
    })
  }

  async function validateConfig(serviceId: string, config: unknown): Promise<ValidationResult> {
    const report = await useApi().post<ValidationReport>(`${path(serviceId)}/validate`, { content: config })
    const result = toValidation(report)
    validation.value[serviceId] = result
    return result
  }

  async function revertConfig(serviceId: string, version: string | number, comment = ''): Promise<ConfigVersionPublic> {
    const expected = current.value[serviceId]?.version
    const reverted = await useApi().post<ConfigVersionPublic>(`${path(serviceId)}/revert`, {
      version: Number(version),
      expected_version: expected ?? null,
      comment,
    })
    setCurrent(reverted)
    delete validation.value[serviceId]
    await loadHistory(serviceId)
    return reverted
  }

  async function diffVersions(serviceId: string, from: number, to: number): Promise<ConfigDiff> {
    return useApi().get<ConfigDiff>(`${path(serviceId)}/diff`, { from, to })
  }

  async function loadTemplates(): Promise<ConfigTemplate[]> {
    templates.value = await useApi().get<ConfigTemplate[]>(`${API}/config-templates`)
    return templates.value
  }

  /** Render a template into a service definition; with `create` the service is also registered (configs:write). */
  async function instantiateTemplate(
    name: string,
    serviceId: string,
    parameters: Record<string, unknown> = {},
    create = false,
  ): Promise<{ service: Record<string, unknown>; created: boolean }> {
    return useApi().post(`${API}/config-templates/${encodeURIComponent(name)}/instantiate`, {
      service_id: serviceId,
      parameters,
      create,
    })
  }

  /** Put the edits aside: the working copy becomes the server's current version again. */
  function discardChanges(serviceId: string): void {
    const version = current.value[serviceId]
    if (version) configs.value[serviceId] = clone(version.content)
    delete validation.value[serviceId]
  }

  function setDraft(serviceId: string, config: Record<string, unknown>): void {
    configs.value[serviceId] = config
  }

  /** A CONFIG_CHANGED event: reload at once when there are no local edits, else mark it stale. */
  function onConfigChanged(event: ConfigChanged): void {
    const known = current.value[event.service_id]
    if (!known || known.version >= event.version) return
    if (hasChanges.value(event.service_id)) stale.value[event.service_id] = event.version
    else void loadConfig(event.service_id).catch(() => undefined)
  }

  /** Forget every cached config (sign-out). */
  function clear(): void {
    configs.value = {}
    current.value = {}
    validation.value = {}
    history.value = []
    stale.value = {}
  }

  return {
    configs,
    current,
    templates,
    validation,
    history,
    stale,
    isValid,
    hasChanges,
    latestVersion,
    versionsOf,
    loadConfig,
    loadHistory,
    saveConfig,
    applyConfig,
    validateConfig,
    revertConfig,
    diffVersions,
    loadTemplates,
    instantiateTemplate,
    discardChanges,
    setDraft,
    onConfigChanged,
    clear,
  }
})
