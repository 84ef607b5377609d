// The messages the three sample services exchange (snake_case, as the Python services sent them).

/** `edge.list.request` */
export interface EdgeListRequest {
  request_id: string;
}
export interface EdgeSummary {
  edge_id: string;
  name: string;
  site: string;
}
export interface EdgeListReply {
  request_id: string;
  edges: EdgeSummary[];
}

/** `edge.status.request` */
export interface EdgeStatusRequest {
  request_id: string;
  edge_id: string;
}
export type EdgeState = 'CONNECTED' | 'DEGRADED' | 'OFFLINE';
export interface EdgeLink {
  link_id: string;
  interface: string;
  isp: string;
  state: 'STABLE' | 'UNSTABLE' | 'DISCONNECTED';
  latency_ms: number;
  loss_pct: number;
}
export interface EdgeEvent {
  time: string;
  event: string;
  severity: 'INFO' | 'NOTICE' | 'WARNING' | 'ERROR';
  link_id: string;
  message: string;
}
export interface EdgeStatusReply {
  request_id: string;
  edge_id: string;
  name: string;
  site: string;
  state: EdgeState;
  last_contact: string;
  links: EdgeLink[];
  /** Event history, oldest first. Large for a big edge: the reply then goes through claim-check. */
  events: EdgeEvent[];
}

/** `notification.slack.request` */
export interface SlackNotification {
  request_id: string;
  channel: string;
  message: string;
}

/** `notification.email.request`; attachments are base64, so an email can be well over 1 MiB. */
export interface EmailNotification {
  request_id: string;
  to: string[];
  subject: string;
  body: string;
  attachments: Array<{ filename: string; content_type: string; content_base64: string }>;
}
