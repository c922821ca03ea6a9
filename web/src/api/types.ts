// Named aliases of the generated OpenAPI types (schema.d.ts: `npm run schema` regenerates it).
import type { components } from './schema'

type S = components['schemas']

export type TokenPair = S['TokenPair']
export type MePublic = S['MePublic']
export type ServicePublic = S['ServicePublic']
export type JobRunPublic = S['JobRunPublic']
export type ServicePage = S['PageOf_ServicePublic_']
export type ServiceMetrics = S['ServiceMetrics']
export type ControlResult = S['ControlResult']
export type RecoveryAccepted = S['RecoveryAccepted']
export type RecoveryPublic = S['RecoveryPublic']
export type RecoveryPage = S['PageOf_RecoveryPublic_']
export type SupervisionPublic = S['SupervisionPublic']
export type HealthCheckPublic = S['HealthCheckPublic']
export type InitializationAccepted = S['InitializationAccepted']
export type InitializationCreate = S['InitializationCreate']
export type InitializationPublic = S['InitializationPublic']
export type InitializationPage = S['PageOf_InitializationPublic_']
export type InitState = S['InitState']
export type ComponentState = S['ComponentState']
export type ConfigVersionPublic = S['ConfigVersionPublic']
export type ConfigVersionPage = S['PageOf_ConfigVersionPublic_']
export type ConfigDiff = S['ConfigDiff']
export type RolloutPublic = S['RolloutPublic']
export type ValidationReport = S['ValidationReport']
export type TemplatePublic = S['TemplatePublic']
export type SchedulePublic = S['SchedulePublic']
export type SchedulePatch = S['SchedulePatch']
export type ScheduleCreate = S['ScheduleCreate']
export type AuditPublic = S['AuditPublic']
export type AuditPage = S['PageOf_AuditPublic_']
export type UiConfig = S['UiConfig']
export type ErrorEnvelope = S['ErrorEnvelope']
export type HookPublic = S['HookPublic']
export type HookCreate = S['HookCreate']
export type HookCreated = S['HookCreated']
export type HookUpdate = S['HookUpdate']
export type AlertLogPublic = S['AlertLogPublic']
export type WebhookPublic = S['WebhookPublic']
export type WebhookCreate = S['WebhookCreate']
export type WebhookCreated = S['WebhookCreated']
export type WebhookUpdate = S['WebhookUpdate']
export type DeliveryPublic = S['DeliveryPublic']
export type DeliveryPage = S['PageOf_DeliveryPublic_']
export type UserPublic = S['UserPublic']
export type UserPage = S['PageOf_UserPublic_']
export type UserCreate = S['UserCreate']
export type UserUpdate = S['UserUpdate']
export type RolePublic = S['RolePublic']
export type StatusHistory = S['StatusHistory']
export type ChannelPublic = S['ChannelPublic']
export type ChannelCreate = S['ChannelCreate']
export type ChannelBody = S['ChannelBody']
export type ChannelDelivery = S['ChannelDelivery']
export type ChannelDeliveryPage = S['PageOf_ChannelDelivery_']
export type DeliveryResult = S['DeliveryResult']
export type StatusChange = S['StatusChange']

// event data carried by the WebSocket (`{type: "event", id, event: {event_id, event_type, timestamp, data}}`)
export type InitializationUpdate = S['InitializationUpdate']
export type ServiceStatusUpdate = S['ServiceStatusUpdate']
export type HealthCheck = S['HealthCheck']
export type MetricsUpdate = S['MetricsUpdate']
export type RecoveryUpdate = S['RecoveryUpdate']
export type RolloutUpdate = S['RolloutUpdate']
export type ConfigChanged = S['ConfigChanged']
export type EventMessage = S['EventMessage']
export type WindflowEvent = EventMessage['event']
export type EventType = WindflowEvent['event_type']

export type InitStatus = InitState['status']
export type ComponentStatus = ComponentState['status']
export type ServiceAction = S['ActionCreate']['action']
export type Permission =
  | 'initialize_system'
  | 'services:read'
  | 'services:control'
  | 'configs:read'
  | 'configs:write'
  | 'services:exec'
  | 'recovery:trigger'
  | 'schedules:manage'
  | 'users:manage'
  | 'audit:read'
  | 'webhooks:manage'
  | 'logs:read'
  | 'codec:decode'
  | 'codec:encode'
