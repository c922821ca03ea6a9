import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { RolePublic, UserCreate, UserPage, UserPublic, UserUpdate } from '@/api/types'
import { API, useApi } from '@/composables/useApi'

const one = (username: string) => `${API}/users/${encodeURIComponent(username)}`

/** Users and roles (users:manage): list, create, disable/enable, change roles, reset a password, delete. */
export const useUserStore = defineStore('users', () => {
  const users = ref<UserPublic[]>([])
  const roles = ref<RolePublic[]>([])
  const cursor = ref<string | null>(null)

  async function fetchUsers(more = false): Promise<UserPublic[]> {
    const page = await useApi().get<UserPage>(`${API}/users`, { limit: 100, cursor: more ? (cursor.value ?? undefined) : undefined })
    users.value = more ? [...users.value, ...page.items] : page.items
    cursor.value = page.next_cursor ?? null
    return users.value
  }

  async function fetchRoles(): Promise<RolePublic[]> {
    roles.value = await useApi().get<RolePublic[]>(`${API}/roles`)
    return roles.value
  }

  function remember(u: UserPublic): void {
    const i = users.value.findIndex((x) => x.username === u.username)
    if (i >= 0) users.value[i] = u
    else users.value = [...users.value, u].sort((a, b) => a.username.localeCompare(b.username))
  }

  async function createUser(body: UserCreate): Promise<UserPublic> {
    const u = await useApi().post<UserPublic>(`${API}/users`, body)
    remember(u)
    return u
  }

  async function updateUser(username: string, body: UserUpdate): Promise<UserPublic> {
    const u = await useApi().patch<UserPublic>(one(username), body)
    remember(u)
    return u
  }

  const setRoles = (username: string, roleNames: string[]) => updateUser(username, { roles: roleNames })
  const setDisabled = (username: string, disabled: boolean) => updateUser(username, { disabled })
  const resetPassword = (username: string, password: string) => updateUser(username, { password })

  async function deleteUser(username: string): Promise<void> {
    await useApi().del(one(username))
    users.value = users.value.filter((u) => u.username !== username)
  }

  function clear(): void {
    users.value = []
    roles.value = []
    cursor.value = null
  }

  return { clear, users, roles, cursor, fetchUsers, fetchRoles, createUser, updateUser, setRoles, setDisabled, resetPassword, deleteUser }
})
