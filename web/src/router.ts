import { createRouter, createWebHistory, type RouteRecordRaw, type Router, type RouterHistory } from 'vue-router'
import type { Permission } from '@/api/types'
import { useAuthStore } from '@/stores/auth'

declare module 'vue-router' {
  interface RouteMeta {
    public?: boolean
    permission?: Permission
    title?: string
  }
}

export const routes: RouteRecordRaw[] = [
  { path: '/login', name: 'login', component: () => import('@/views/LoginView.vue'), meta: { public: true, title: 'Sign in' } },
  { path: '/', name: 'overview', component: () => import('@/views/OverviewView.vue'), meta: { title: 'Overview', permission: 'services:read' } },
  {
    path: '/initialization',
    name: 'initialization',
    component: () => import('@/views/InitializationView.vue'),
    meta: { title: 'Initialization', permission: 'services:read' },
  },
  { path: '/services', name: 'services', component: () => import('@/views/ServicesView.vue'), meta: { title: 'Services', permission: 'services:read' } },
  {
    path: '/services/:id',
    name: 'service',
    component: () => import('@/views/ServiceDetailView.vue'),
    props: true,
    meta: { title: 'Service', permission: 'services:read' },
  },
  {
    path: '/configs/:id?',
    name: 'configs',
    component: () => import('@/views/ConfigsView.vue'),
    props: true,
    meta: { title: 'Configs', permission: 'configs:read' },
  },
  {
    path: '/templates',
    name: 'templates',
    component: () => import('@/views/TemplatesView.vue'),
    meta: { title: 'Config templates', permission: 'configs:read' },
  },
  { path: '/schedules', name: 'schedules', component: () => import('@/views/SchedulesView.vue'), meta: { title: 'Schedules', permission: 'services:read' } },
  { path: '/events', name: 'events', component: () => import('@/views/EventsView.vue'), meta: { title: 'Events', permission: 'services:read' } },
  { path: '/hooks', name: 'hooks', component: () => import('@/views/HooksView.vue'), meta: { title: 'Alert hooks', permission: 'recovery:trigger' } },
  { path: '/webhooks', name: 'webhooks', component: () => import('@/views/WebhooksView.vue'), meta: { title: 'Outgoing webhooks', permission: 'webhooks:manage' } },
  { path: '/channels', name: 'channels', component: () => import('@/views/ChannelsView.vue'), meta: { title: 'Notification channels', permission: 'configs:read' } },
  { path: '/users', name: 'users', component: () => import('@/views/UsersView.vue'), meta: { title: 'Users and roles', permission: 'users:manage' } },
  { path: '/audit', name: 'audit', component: () => import('@/views/AuditView.vue'), meta: { title: 'Audit log', permission: 'audit:read' } },
  { path: '/:pathMatch(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue'), meta: { public: true, title: 'Not found' } },
]

export function buildRouter(history: RouterHistory = createWebHistory()): Router {
  const router = createRouter({ history, routes })
  router.beforeEach((to) => {
    const auth = useAuthStore()
    if (!to.meta.public && !auth.isAuthenticated) {
      return { name: 'login', query: to.fullPath !== '/' ? { next: to.fullPath } : {} }
    }
    if (to.name === 'login' && auth.isAuthenticated) return { name: 'overview' }
    if (to.meta.permission && auth.user && !auth.hasPermission(to.meta.permission)) {
      return { name: 'not-found', params: { pathMatch: to.path.slice(1).split('/') }, query: { forbidden: to.meta.permission } }
    }
    return true
  })
  router.afterEach((to) => {
    document.title = to.meta.title ? `${to.meta.title} · windflow` : 'windflow'
  })
  return router
}
