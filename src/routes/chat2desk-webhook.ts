import { Hono } from 'hono';
import type { Chat2DeskWebhooks } from '../chat2desk/webhooks.js';

/** Chat2Desk's deliveries; the path's secret names the portal. Non-2xx makes Chat2Desk retry. */
export function createChat2DeskWebhookRoute(deps: { chat2deskWebhooks: Chat2DeskWebhooks }) {
  return new Hono().post('/chat2desk/webhook/:secret', async (c) => {
    const outcome = await deps.chat2deskWebhooks.receive(c.req.param('secret'), await c.req.text(), (name) => c.req.header(name));
    return outcome.status === 200 ? c.json({ status: outcome.result }) : c.json({ error: outcome.error }, outcome.status);
  });
}
