/**
 * `npm run demo`: a guided tour of the app without a Bitrix24 account.
 *
 * It starts the fake Bitrix24 portal and the fake Chat2Desk used by the tests, runs our real server
 * in-process against them (real HTTP, real SQLite file in a temp dir), and walks through what a
 * portal sees: install, the app page, settings, robot calls, duplicates, forged calls, the dialog
 * robots (find, tag, log to the timeline) with the Chat2Desk cache and its webhooks, a send whose
 * answer was lost (settled, not resent), an app update (durable re-registration), a closed dialog
 * becoming a lead with its comment and trigger, the CRM tab (preview, history, a message with a file
 * sent from it exactly once, the client's answer arriving on the live stream), the Chat workspace (who
 * sees which dialogs), Open Channels mode (a client's message into an Open Channel and the operator's
 * answer back), the event log, and the health check; then three server processes on one PostgreSQL
 * sharing a burst of robot calls, one of them killed with kill -9 midway.
 * Nothing leaves 127.0.0.1 and everything is deleted at the end.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import qs from 'qs';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { DEFAULT_LINE_OPTIONS } from '../src/open-channels/lines.js';
import { startServer, type RunningServer } from '../src/server.js';
import { startFakeBitrix24, type FakeBitrix24, type SentEvent } from '../test/fakes/bitrix24.js';
import { formatC2DTime, startFakeChat2Desk, type C2DCall, type FakeChat2Desk } from '../test/fakes/chat2desk.js';
import { killHard, startChild, type Child } from '../test/support/child-server.js';
import { startEmbeddedPostgres } from '../test/support/embedded-postgres.js';
import { eventually, freePort, installAndConfigure, postForm, stackEnv } from '../test/support/stack.js';
import pg from 'pg';

// ----- printing helpers -------------------------------------------------------------------------

let stepNumber = 0;

/** A numbered heading and a short plain-language explanation of what the step shows. */
function step(title: string, explanation: string): void {
  stepNumber += 1;
  const heading = `${stepNumber}. ${title}`;
  console.log(`\n${heading}\n${'='.repeat(heading.length)}`);
  console.log(explanation);
}

/** One labelled fact, with objects pretty-printed and indented under the label. */
function show(label: string, value: unknown): void {
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  console.log(`  ${label}: ${text.replace(/\n/g, '\n  ')}`);
}

// ----- waiting helpers --------------------------------------------------------------------------

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The server answers Bitrix24 at once and does the Chat2Desk work in a background worker, which
 * then reports back with bizproc.event.send. So the demo polls the fake portal for that report.
 */
async function waitForResult(b24: FakeBitrix24, eventToken: string, timeoutMs = 10_000): Promise<SentEvent> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const sent = b24.sentEvents.find((event) => event.eventToken === eventToken);
    if (sent) return sent;
    if (Date.now() > until) throw new Error(`no result reached the workflow within ${timeoutMs} ms (event token ${eventToken})`);
    await sleep(25);
  }
}

/** Polls the job stored for an event token until `done(job)` holds. */
async function waitForJob(server: RunningServer, eventToken: string, done: (job: { state: string; lastError: string | null }) => boolean, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  const { database } = server;
  if (database.kind !== 'sqlite') throw new Error('the demo runs on SQLite');
  for (;;) {
    const row = database.sqlite.prepare('select state, last_error as lastError from jobs where event_token = ?').get(eventToken) as
      | { state: string; lastError: string | null }
      | undefined;
    if (row && done(row)) return row;
    if (Date.now() > until) throw new Error(`the job for event token ${eventToken} did not settle within ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** Chat2Desk calls that actually sent a message (successful POST /messages). */
const sentMessageCalls = (c2d: FakeChat2Desk) => c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && call.status === 200);

/** Runs a robot the way a workflow does and returns what the workflow got back once the work was done. */
async function runRobot(b24: FakeBitrix24, code: string, properties: Record<string, string>, documentId?: [string, string, string]) {
  const call = await b24.callRobot({ code, properties, documentId });
  if (call.status !== 200) throw new Error(`${code} was refused: ${call.status} ${call.text}`);
  return (await waitForResult(b24, call.eventToken)).returnValues;
}

/** Only the named return values, in that order, so a step shows what it is about. */
function pick(values: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((key) => [key, values[key]]));
}

/** Runs `work` and returns its result with the Chat2Desk API calls made meanwhile. */
async function withChat2DeskCalls<T>(c2d: FakeChat2Desk, work: () => Promise<T>): Promise<{ result: T; calls: C2DCall[] }> {
  const before = c2d.calls.length;
  const result = await work();
  return { result, calls: c2d.calls.slice(before) };
}

/** "3 (GET /dialogs/5, ...)" for a list of Chat2Desk calls. */
const describeCalls = (calls: C2DCall[]) => (calls.length === 0 ? '0' : `${calls.length} (${calls.map((call) => `${call.method} ${call.path}`).join(', ')})`);

/** The fake Chat2Desk's own record of a dialog, which the demo changes to play Chat2Desk's part. */
function fakeDialog(c2d: FakeChat2Desk, dialogId: number): Record<string, unknown> {
  const dialog = c2d.account().dialogs.find((item) => item.id === dialogId);
  if (!dialog) throw new Error(`the fake Chat2Desk has no dialog ${dialogId}`);
  return dialog;
}

/** Chat2Desk posts a webhook to the app; the answer is the HTTP status the app gave (0 = no answer). */
async function deliverWebhook(c2d: FakeChat2Desk, body: Record<string, unknown>): Promise<string> {
  const statuses = await c2d.deliverWebhook(body);
  if (statuses.length === 0) throw new Error(`no webhook subscribed to ${String(body.hook_type)}`);
  return `${String(body.hook_type)} -> HTTP ${statuses.join(', ')}`;
}

/** What "Find dialogs by phone" returns that a reader cares about. */
const FIND_FIELDS = ['status', 'found', 'dialog_id', 'dialog_state', 'operator_name', 'responsible', 'tags', 'last_message_text', 'dialog_url'];

/** The parts of a stored Chat2Desk message a reader cares about. */
function summarizeMessage(message: Record<string, unknown> | undefined) {
  if (!message) return '(none)';
  const { id, client_id, dialog_id, channel_id, transport, type, text } = message;
  return { id, client_id, dialog_id, channel_id, transport, type, text };
}

/** Bitrix24 opens the app page: the portal's POST into the iframe, as the fake portal builds it. */
async function openAppPage(b24: FakeBitrix24, server: RunningServer) {
  const request = b24.installPageRequest();
  const response = await postForm(`${server.url}/app`, request.body, request.query);
  const html = await response.text();
  const texts = (pattern: RegExp) => [...html.matchAll(pattern)].map((match) => plainText(match[1]!));
  const pageData = /<script type="application\/json" id="page-data">([\s\S]*?)<\/script>/.exec(html);
  return {
    status: response.status,
    contentType: response.headers.get('content-type') ?? '',
    sections: texts(/<h2[^>]*>([\s\S]*?)<\/h2>/g),
    connection: [...html.matchAll(/<dt>([^<]*)<\/dt>\s*<dd[^>]*>([\s\S]*?)<\/dd>/g)].map((match) => `${decodeHtml(match[1]!)}: ${plainText(match[2]!)}`),
    token: pageData ? String((JSON.parse(pageData[1]!) as { token?: unknown }).token ?? '') : '',
  };
}

/** An HTML fragment as a reader sees it: tags dropped, spaces collapsed, entities decoded. */
function plainText(html: string): string {
  return decodeHtml(
    html
      .replace(/<[^>]*>/g, '')
      .replace(/\s+/g, ' ')
      .trim(),
  );
}

function decodeHtml(text: string): string {
  return text.replace(/&(amp|lt|gt|quot|#x27|#39|#x3D);/g, (_, name: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#x27': "'", '#39': "'", '#x3D': '=' })[name] ?? _);
}

/** One event log entry in a line: when, what, status, record, dialog, and the error with its next step. */
function describeEntry(entry: Record<string, unknown>): string {
  const record = entry.record as { type: string; id: number } | null;
  const dialog = entry.dialog as { id: number } | null;
  const error = entry.error as { message: string; nextStep: string } | null;
  const parts = [String(entry.at).slice(11, 19), String(entry.title), String(entry.status)];
  if (record) parts.push(`${record.type} ${record.id}`);
  if (dialog) parts.push(`dialog ${dialog.id}`);
  parts.push(error ? `${error.message} -> ${error.nextStep}` : String(entry.summary));
  return parts.join(' | ');
}

// ----- the tour ---------------------------------------------------------------------------------

async function tour(b24: FakeBitrix24, c2d: FakeChat2Desk, server: RunningServer): Promise<void> {
  step(
    'Install the app into the portal',
    'When an admin installs the app, Bitrix24 posts an ONAPPINSTALL event with OAuth tokens.\n' +
      'The server stores the portal and registers its robots and business-process activities.',
  );
  const installed = await postForm(`${server.url}/install`, b24.installEventBody());
  show('HTTP answer', `${installed.status} ${await installed.text()}`);
  if (installed.status !== 200) throw new Error('install was refused');
  b24.installFinish(); // what BX24.installFinish() does in the portal's install page
  const names = (registry: Map<string, Record<string, unknown>>) =>
    [...registry].map(([code, robot]) => `${code} - ${String((robot.NAME as Record<string, unknown> | undefined)?.EN ?? robot.NAME)}`);
  show('Robots (automation rules) now in the portal', names(b24.robots));
  show('Business-process activities now in the portal', names(b24.activities));
  show(
    'Event bindings',
    b24.eventBindings.map((binding) => `${binding.event} -> ${binding.handler}`),
  );

  step(
    'The admin opens the app in Bitrix24',
    'Bitrix24 opens the app by POSTing its form (AUTH_ID, member_id, APPLICATION_TOKEN...) into an iframe\n' +
      'at the handler address. The server asks the portal who the user is and renders the page; these\n' +
      'are the sections it shows an administrator and what the Connection section says.',
  );
  const opened = await openAppPage(b24, server);
  show('App page address (the handler path to register)', `${server.url}/app`);
  show('HTTP answer', `${opened.status} ${opened.contentType}`);
  show('Sections', opened.sections.join(' | '));
  show('Connection', opened.connection);

  step(
    'Connect Chat2Desk on the settings page',
    'A portal admin saves the Chat2Desk API token and defaults. The server checks the admin with\n' +
      'Bitrix24 and the token with Chat2Desk. The token is stored encrypted and never sent back.',
  );
  const settings = await fetch(`${server.url}/api/settings`, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${b24.issueAuth(1).access_token}`,
      'x-bitrix24-member-id': b24.memberId,
      'content-type': 'application/json',
    },
    body: JSON.stringify({ chat2deskApiToken: c2d.token, defaultCountry: 'RU', defaultChannelId: 17404, defaultTransport: 'whatsapp' }),
  });
  show('HTTP status', settings.status);
  show('Saved settings', await settings.json());
  if (settings.status !== 200) throw new Error('settings were refused');
  await server.idle(); // the server fills its Chat2Desk cache in the background after the save

  step(
    'A robot messages a client who already wrote to the company',
    'A deal moves to a stage with the "Send Chat2Desk message" robot. Bitrix24 calls our handler;\n' +
      'the server answers at once, sends in the background and reports back to the workflow.',
  );
  const { client } = c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
  show('Chat2Desk already knows client', `${String(client.id)} (phone 79161234567, WhatsApp, open dialog)`);
  const known = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: '+7 916 123-45-67', text: 'Your order #1024 is ready' } });
  show('Immediate answer to Bitrix24', `${known.status} ${known.text}`);
  const knownResult = await waitForResult(b24, known.eventToken);
  show('Message as Chat2Desk stored it', summarizeMessage(c2d.account().messages.at(-1)));
  show('RETURN_VALUES the workflow got', knownResult.returnValues);

  step(
    'Write first: a phone Chat2Desk has never seen',
    'With no such client in Chat2Desk, the server creates one on the default channel and transport\n' +
      'from the settings (phone normalised to international form), then sends the message.',
  );
  const writeFirst = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: '8 916 765-43-21', text: 'Hello! We have an offer for you' } });
  show('Immediate answer to Bitrix24', `${writeFirst.status} ${writeFirst.text}`);
  const writeFirstResult = await waitForResult(b24, writeFirst.eventToken);
  const created = c2d.calls.filter((call) => call.method === 'POST' && call.path === '/clients').at(-1);
  show('Client created with POST /clients', created ? { status: created.status, body: created.body } : '(not called!)');
  show('Message as Chat2Desk stored it', summarizeMessage(c2d.account().messages.at(-1)));
  show('RETURN_VALUES the workflow got', writeFirstResult.returnValues);

  step(
    'A robot call with a bad phone number',
    'Bad input must not leave the workflow hanging: it still finishes, with status=failed and an\n' + 'error a portal admin can read, and nothing goes to Chat2Desk.',
  );
  const sentBefore = sentMessageCalls(c2d).length;
  const bad = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: 'call me maybe', text: 'hi' } });
  show('Immediate answer to Bitrix24', `${bad.status} ${bad.text}`);
  show('RETURN_VALUES the workflow got', (await waitForResult(b24, bad.eventToken)).returnValues);
  show('Messages sent to Chat2Desk by this call', sentMessageCalls(c2d).length - sentBefore);

  step(
    'The same robot call delivered three times at once',
    'Networks retry. The event token identifies the workflow step, so the server accepts the first\n' +
      'copy, marks the others as duplicates, and the client gets the message once.',
  );
  const repeated = b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'Your courier is on the way' } });
  const sentBeforeRepeat = sentMessageCalls(c2d).length;
  const answers = await Promise.all([1, 2, 3].map(() => postForm(`${server.url}/bitrix24/robot`, repeated.body)));
  for (const [index, answer] of answers.entries()) show(`Delivery ${index + 1}`, `${answer.status} ${await answer.text()}`);
  show('RETURN_VALUES the workflow got', (await waitForResult(b24, repeated.eventToken)).returnValues);
  await sleep(300); // give any (wrong) second send time to show up before counting
  show('Messages sent to Chat2Desk', sentMessageCalls(c2d).length - sentBeforeRepeat);
  show('Results reported to the workflow', b24.sentEvents.filter((event) => event.eventToken === repeated.eventToken).length);

  step(
    'A forged robot call',
    'Every call carries the application token Bitrix24 gave the server at install. A call with any\n' + 'other token is refused before anything is stored or sent.',
  );
  const forged = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' }, applicationToken: 'f'.repeat(32) });
  show('Answer', `${forged.status} ${forged.text}`);

  step(
    'A robot call forged by an employee who opened the app',
    'The application token is no secret: Bitrix24 puts it into every page it opens for the app, with the\n' +
      "employee's own access token. So the server stores such a call but runs nothing until the portal\n" +
      'confirms its event token (bizproc.activity.log, batched); Bitrix24 refuses a token it never issued.',
  );
  const page = new URLSearchParams(b24.placementPageRequest('CRM_DEAL_DETAIL_TAB', { ID: '301' }).body);
  const madeUpWorkflow = `${randomBytes(7).toString('hex')}.${randomBytes(4).toString('hex')}`;
  const madeUpToken = `${madeUpWorkflow}|A1|${randomBytes(16).toString('hex')}.${randomBytes(32).toString('hex')}`;
  const sentBeforeForgery = sentMessageCalls(c2d).length;
  const employeeCall = await postForm(
    `${server.url}/bitrix24/robot`,
    qs.stringify({
      workflow_id: madeUpWorkflow,
      code: 'c2d_send_message',
      document_id: ['crm', 'CCrmDocumentDeal', 'DEAL_301'],
      document_type: ['crm', 'CCrmDocumentDeal', 'DEAL'],
      event_token: madeUpToken,
      properties: { phone: '79161234567', text: 'Pay to this card: 4111 1111 1111 1111' },
      use_subscription: 'Y',
      timeout_duration: '0',
      auth: { access_token: page.get('AUTH_ID'), member_id: page.get('member_id'), application_token: page.get('APPLICATION_TOKEN'), domain: b24.domain, user_id: '2' },
    }),
  );
  show('Immediate answer (the call is only stored)', `${employeeCall.status} ${await employeeCall.text()}`);
  const refused = await waitForJob(server, madeUpToken, (job) => job.state === 'done');
  show('What became of it', { state: refused.state, error: refused.lastError });
  show('Messages sent to Chat2Desk by this call', sentMessageCalls(c2d).length - sentBeforeForgery);
  show('Results reported to a workflow', b24.sentEvents.filter((event) => event.eventToken === madeUpToken).length);

  step(
    'Find dialogs by phone for the client who already wrote',
    'The client answers in WhatsApp and Chat2Desk sends the app an inbox webhook. A robot looks the\n' +
      'client up by phone: latest dialog, state, last message, link. No operator has taken it yet.',
  );
  const { message: reply, webhook: inbox } = c2d.receiveMessage({ clientId: client.id as number, text: 'Thanks! Can I pick it up tomorrow?' });
  show('Client wrote', `"${String(reply.text)}" (dialog ${String(reply.dialog_id)})`);
  show('Webhook delivered', await deliverWebhook(c2d, inbox));
  const firstFind = await withChat2DeskCalls(c2d, () => runRobot(b24, 'c2d_find_dialogs', { phone: '+7 916 123-45-67' }));
  show('RETURN_VALUES the workflow got', pick(firstFind.result, FIND_FIELDS));
  const dialogId = Number(firstFind.result.dialog_id); // return values reach Bitrix24 as strings

  step(
    'Chat2Desk transfers the dialog to another operator, and Find sees it',
    'Lookups are served from the SQLite cache. A webhook deletes what it makes stale before it is\n' +
      'acknowledged, so the next Find fetches just that again; with nothing changed, Find costs no API calls.',
  );
  fakeDialog(c2d, dialogId).operator_id = 311416;
  const transfer = { hook_type: 'dialog_transferred', dialog_id: dialogId, client_id: client.id, operator_id: 311416, event_time: new Date().toISOString() };
  show('Webhook delivered', await deliverWebhook(c2d, transfer));
  const secondFind = await withChat2DeskCalls(c2d, () => runRobot(b24, 'c2d_find_dialogs', { phone: '+7 916 123-45-67' }));
  show('RETURN_VALUES the workflow got', pick(secondFind.result, ['status', 'dialog_id', 'operator_id', 'operator_name', 'responsible']));
  show('Chat2Desk API calls, first Find', describeCalls(firstFind.calls));
  show('Chat2Desk API calls, second Find', describeCalls(secondFind.calls));
  const thirdFind = await withChat2DeskCalls(c2d, () => runRobot(b24, 'c2d_find_dialogs', { phone: '+7 916 123-45-67' }));
  show('Chat2Desk API calls, Find again with nothing changed', describeCalls(thirdFind.calls));

  step(
    'Tag dialog',
    "Chat2Desk tags belong to clients and requests, so by default the dialog's client is tagged.\n" +
      'Tags are named by label or id; a label Chat2Desk does not have fails with an error naming it.',
  );
  show('Add tag "R"', pick(await runRobot(b24, 'c2d_tag_dialog', { dialog_id: String(dialogId), tags: 'R' }), ['status', 'error', 'client_id', 'tags']));
  show('Add tag "Platinum"', pick(await runRobot(b24, 'c2d_tag_dialog', { dialog_id: String(dialogId), tags: 'Platinum' }), ['status', 'error', 'tags']));

  step(
    'Log the closed dialog to the deal timeline',
    'The operator closes the dialog and a robot on the deal writes one timeline comment about it,\n' +
      'transcript included. Running the robot again returns the same comment and writes nothing.',
  );
  Object.assign(fakeDialog(c2d, dialogId), { state: 'closed', end: formatC2DTime(Date.now()) });
  const closed = { hook_type: 'close_dialog', dialog_id: dialogId, client_id: client.id, event_time: new Date().toISOString() };
  show('Webhook delivered', await deliverWebhook(c2d, closed));
  const dealId = b24.seedDeal({ title: 'Order #1024' });
  const deal: [string, string, string] = ['crm', 'CCrmDocumentDeal', `DEAL_${dealId}`];
  const logProperties = { dialog_id: String(dialogId), transcript: 'Y' };
  const firstLog = await runRobot(b24, 'c2d_log_dialog', logProperties, deal);
  show('RETURN_VALUES the workflow got', firstLog);
  const dealComments = () => b24.timelineComments.filter((comment) => comment.entityType === 'deal' && comment.entityId === dealId);
  show(`Comment on deal ${dealId}'s timeline (BBCode)`, dealComments()[0]?.comment ?? '(none!)');
  const secondLog = await runRobot(b24, 'c2d_log_dialog', logProperties, deal);
  show('Run again: RETURN_VALUES', secondLog);
  show('Same comment id', secondLog.comment_id === firstLog.comment_id ? 'yes' : 'NO');
  show(`Comments on deal ${dealId}'s timeline`, dealComments().length);

  step(
    'Chat2Desk stores a message but its answer is lost',
    'The network drops the answer to POST /messages after Chat2Desk stored the message. The run\n' +
      'cannot know whether the client got it, so it never sends blindly: the exactly-once ledger has\n' +
      'the send claimed under this run, and the next attempt first looks for the message (by the\n' +
      'external_id it carried, paging back to the attempt however many messages came since).',
  );
  const lostAnswer = c2d.holdNext({ method: 'POST', path: '/messages' });
  const postsToMessages = () => c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages').length;
  const postsBeforeLoss = postsToMessages();
  const inDoubt = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'Your invoice is attached to the deal' } });
  await lostAnswer.arrived;
  show('Chat2Desk stored message', summarizeMessage(c2d.account().messages.at(-1) as Record<string, unknown> | undefined));
  lostAnswer.lose();
  show('RETURN_VALUES the workflow got', pick((await waitForResult(b24, inDoubt.eventToken, 30_000)).returnValues, ['status', 'message_id', 'error']));
  show('POST /messages made by the run (the lost one included)', postsToMessages() - postsBeforeLoss);
  show('Messages with this text in Chat2Desk', c2d.account().messages.filter((message) => message.text === 'Your invoice is attached to the deal').length);

  step(
    'The app is updated in Bitrix24',
    "An update drops the app's robots in the portal. ONAPPUPDATE stores a durable re-registration job\n" +
      'before it is answered, so the robots come back even if the portal is briefly unavailable.',
  );
  b24.robots.clear();
  b24.activities.clear();
  show('Robots registered in the portal before the event', b24.robots.size);
  const update = await postForm(`${server.url}/bitrix24/events`, b24.eventBody('ONAPPUPDATE', { VERSION: '2', PREVIOUS_VERSION: '1' }));
  show('Answer', `${update.status} ${await update.text()}`);
  await server.idle();
  show('Robots registered in the portal after the job ran', [...b24.robots.keys()].join(', '));

  step(
    'Set up CRM records and operators, then close a dialog in Chat2Desk',
    'On the page, the admin turns on "closed dialogs -> CRM records" (create a lead), picks a source and\n' +
      'maps a Chat2Desk operator to a Bitrix24 user (sent through the same settings API the page uses).\n' +
      'A new client writes in WhatsApp, the operator closes the dialog, and Chat2Desk sends close_dialog\n' +
      'and close_request. Both name the same request (one episode), so one job runs: no CRM record has\n' +
      "this phone, so a lead is created, responsible = the operator's user, with the episode pinned to its\n" +
      'timeline as one comment; then the "Chat2Desk dialog closed" trigger fires on the lead.',
  );
  const operator = c2d.account().operators[0]!;
  const manager = 2; // the fake portal's second user, Max Manager
  const episodesOn = await fetch(`${server.url}/api/settings`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${b24.issueAuth(1).access_token}`, 'x-bitrix24-member-id': b24.memberId, 'content-type': 'application/json' },
    body: JSON.stringify({ episodesEnabled: true, episodeEntity: 'lead', sourceId: 'OTHER', operatorMap: { [String(operator.id)]: manager } }),
  });
  show(
    `Settings saved (HTTP ${episodesOn.status})`,
    pick((await episodesOn.json()) as Record<string, unknown>, ['episodesEnabled', 'episodeEntity', 'sourceId', 'operatorMap', 'matchOrder']),
  );
  await server.idle();
  const { client: newClient, dialog: newDialog } = c2d.seedClient({ phone: '79035550101', name: 'Maria', withDialog: 'open' });
  fakeDialog(c2d, newDialog!.id as number).operator_id = operator.id;
  c2d.receiveMessage({ clientId: newClient.id as number, text: 'Hi, do you deliver on Sundays?' });
  const episode = c2d.closeDialog(newDialog!.id as number);
  show('Operator who closed it', `${String(operator.id)} (${String(operator.email)}) -> Bitrix24 user ${manager}`);
  show('Webhooks delivered', [await deliverWebhook(c2d, episode.closeDialog), await deliverWebhook(c2d, episode.closeRequest)]);
  await server.pipeline.settled(['close_episode', 'fire_trigger']);
  const lead = [...b24.crm.leads.values()].find((item) => item.ORIGIN_ID === String(episode.requestId));
  show('New lead in the portal', lead ? pick(lead, ['ID', 'TITLE', 'NAME', 'PHONE', 'SOURCE_ID', 'ASSIGNED_BY_ID', 'ORIGINATOR_ID', 'ORIGIN_ID']) : '(none!)');
  const leadComments = b24.timelineComments.filter((comment) => comment.entityType === 'lead' && comment.entityId === Number(lead?.ID));
  const firstLines = (leadComments[0]?.comment ?? '(none!)').split('\n').slice(0, 6).join('\n');
  show(`Comments on the lead's timeline: ${leadComments.length}; the first lines`, firstLines);
  const ownerTypes: Record<number, string> = { 1: 'lead', 2: 'deal', 3: 'contact', 4: 'company' };
  show(
    'Triggers fired in the portal (crm.automation.trigger.execute)',
    b24.triggerExecutions.map((fired) => `${fired.code} on ${ownerTypes[fired.ownerTypeId] ?? fired.ownerTypeId} ${fired.ownerId}`),
  );

  step(
    'The Chat2Desk tab in a CRM card',
    'Installing bound a "Chat2Desk chats" tab in lead, deal, contact and company cards. A manager opens\n' +
      "Maria's contact: Bitrix24 POSTs the tab; the server reads the contact's phones with the manager's own\n" +
      'token (one batch) and gives the page a token for those phones only; the page then reads the dialogs.',
  );
  show('Tab address (bound with placement.bind)', `${server.url}/tab`);
  show(
    'Card tabs bound in the portal',
    b24.placements.filter((binding) => binding.handler.endsWith('/tab')).map((binding) => binding.placement),
  );
  const maria = b24.seedContact({ name: 'Maria', phones: ['+7 903 555-01-01'] });
  const tabRequest = b24.placementPageRequest('CRM_CONTACT_DETAIL_TAB', { ID: String(maria) }, { accessToken: b24.issueAuth(manager).access_token });
  const tabPage = await postForm(`${server.url}/tab`, tabRequest.body, tabRequest.query);
  const tabData = JSON.parse(/<script type="application\/json" id="page-data">([\s\S]*?)<\/script>/.exec(await tabPage.text())?.[1] ?? '{}') as {
    token?: string;
    phones?: string[];
  };
  show(`POST /tab -> HTTP ${tabPage.status}; the contact's phones`, tabData.phones ?? []);
  const byPhone = await fetch(`${server.url}/api/dialogs/by-phone?phone=${tabData.phones?.[0] ?? ''}`, { headers: { authorization: `Bearer ${tabData.token}` } });
  const found = (await byPhone.json()) as { latest?: Record<string, unknown> | null; others?: unknown[] };
  show(
    `GET /api/dialogs/by-phone -> HTTP ${byPhone.status}; the preview`,
    found.latest ? pick(found.latest, ['id', 'state', 'client', 'channel', 'transport', 'lastMessage', 'operator', 'chat2deskUrl']) : '(none)',
  );
  const history = await fetch(`${server.url}/api/dialogs/${String(found.latest?.id)}/messages?limit=20`, { headers: { authorization: `Bearer ${tabData.token}` } });
  show(
    `GET /api/dialogs/${String(found.latest?.id)}/messages -> HTTP ${history.status}`,
    ((await history.json()) as { messages?: Array<{ type: string; text: string | null }> }).messages?.map((message) => `${message.type}: ${message.text}`) ?? [],
  );
  const elsewhere = await fetch(`${server.url}/api/dialogs/by-phone?phone=79161234567`, { headers: { authorization: `Bearer ${tabData.token}` } });
  show('Another phone with the same token', `HTTP ${elsewhere.status} ${await elsewhere.text()}`);

  step(
    'Write to the client from the tab, with a file, and see the answer arrive live',
    'The page asks for a single-use live ticket and opens the update stream with it (the page token never\n' +
      'goes into a URL). The manager attaches a PDF (uploaded to our server, sniffed, kept at an unguessable\n' +
      'link that expires) and sends a message: one idempotency key per composed message, so sending the same\n' +
      'request again does nothing twice. Chat2Desk fetches the file by its link; the message goes out as the\n' +
      "manager's Chat2Desk operator. Then Maria answers and the open tab hears of it without a reload.",
  );
  const bearer = { authorization: `Bearer ${tabData.token}` };
  const ticket = (await (await fetch(`${server.url}/api/live/ticket`, { method: 'POST', headers: bearer })).json()) as { ticket?: string };
  const stream = await fetch(`${server.url}/api/live?ticket=${encodeURIComponent(ticket.ticket ?? '')}`);
  show('Live stream opened with the ticket', `HTTP ${stream.status} ${stream.headers.get('content-type') ?? ''}`);
  const again = await fetch(`${server.url}/api/live?ticket=${encodeURIComponent(ticket.ticket ?? '')}`);
  show('The same ticket a second time', `HTTP ${again.status}`);
  const upload = new FormData();
  upload.append('file', new Blob([Buffer.from('%PDF-1.4\n% price list\n%%EOF\n')], { type: 'application/pdf' }), 'price list.pdf');
  const uploaded = await fetch(`${server.url}/api/files`, { method: 'POST', headers: bearer, body: upload });
  const file = (await uploaded.json()) as { id?: string; name?: string; type?: string; expiresAt?: string };
  show(`POST /api/files -> HTTP ${uploaded.status}`, pick(file as Record<string, unknown>, ['name', 'type', 'expiresAt']));
  const action = {
    key: `demo-${randomBytes(8).toString('hex')}`,
    action: 'send',
    dialogId: Number(found.latest?.id),
    text: 'Yes, we deliver on Sundays. Our price list:',
    fileIds: [file.id],
  };
  const sentBeforeTab = sentMessageCalls(c2d).length;
  const post = () => fetch(`${server.url}/api/dialog-actions`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify(action) });
  const [first, replay] = await Promise.all([post(), post()]);
  show('POST /api/dialog-actions twice at once with one key', `HTTP ${first.status}, ${replay.status}`);
  let outcome: Record<string, unknown> = {};
  for (const until = Date.now() + 10_000; Date.now() < until; await sleep(50)) {
    outcome = (await (await fetch(`${server.url}/api/dialog-actions/${action.key}`, { headers: bearer })).json()) as Record<string, unknown>;
    if (outcome.state === 'done' || outcome.state === 'failed') break;
  }
  show('The action, polled until finished', pick(outcome, ['state', 'error']));
  const tabSends = c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && call.status === 200).slice(sentBeforeTab);
  show(
    'Messages Chat2Desk received',
    tabSends.map((call) => pick(call.body as Record<string, unknown>, ['client_id', 'operator_id', 'text', 'attachment_filename'])),
  );
  const fetched = c2d.fetchedAttachments.at(-1);
  show('Chat2Desk fetched the file', fetched ? `HTTP ${fetched.status}, ${fetched.contentType}, ${fetched.contentDisposition}` : '(not fetched!)');
  const { webhook: answer } = c2d.receiveMessage({ clientId: newClient.id as number, text: 'Great, thank you!' });
  show('Maria answered; webhook delivered', await deliverWebhook(c2d, answer));
  const reader = stream.body?.getReader();
  let events = '';
  for (const until = Date.now() + 5_000; reader && !events.includes('event: dialog') && Date.now() < until; ) {
    const chunk = await Promise.race([reader.read(), sleep(500).then(() => undefined)]);
    if (chunk?.value) events += Buffer.from(chunk.value).toString('utf8');
  }
  await reader?.cancel();
  show(
    'The open tab heard',
    events
      .split('\n')
      .filter((line) => line.startsWith('event:') || line.startsWith('data:'))
      .join('\n') || '(nothing!)',
  );

  step(
    'The Chat workspace on the app page',
    'For users who work from Bitrix24 rather than from a card: "Mine" lists the dialogs of the operator\n' +
      'mapped to the user; "Open" and "All" are for portal admins and the users or departments an admin\n' +
      "lists. Search by name or phone. Nobody else sees other people's conversations.",
  );
  const adminPage = await openAppPage(b24, server);
  const adminBearer = { authorization: `Bearer ${adminPage.token}` };
  for (const query of ['view=open', 'view=all&q=Maria']) {
    const listed = await fetch(`${server.url}/api/workspace/dialogs?${query}`, { headers: adminBearer });
    const body = (await listed.json()) as { dialogs?: Array<{ id: number; state: string; client: { name: string | null } | null; lastMessage: { text: string | null } | null }> };
    show(
      `Admin: GET /api/workspace/dialogs?${query} -> HTTP ${listed.status}`,
      (body.dialogs ?? []).slice(0, 5).map((item) => `#${item.id} ${item.state} ${item.client?.name ?? '?'}: ${item.lastMessage?.text ?? ''}`),
    );
  }
  const managerOpen = b24.installPageRequest({ accessToken: b24.issueAuth(manager).access_token });
  const managerHtml = await (await postForm(`${server.url}/app`, managerOpen.body, managerOpen.query)).text();
  const managerToken = String(
    (JSON.parse(/<script type="application\/json" id="page-data">([\s\S]*?)<\/script>/.exec(managerHtml)?.[1] ?? '{}') as { token?: unknown }).token ?? '',
  );
  for (const view of ['mine', 'all']) {
    const listed = await fetch(`${server.url}/api/workspace/dialogs?view=${view}`, { headers: { authorization: `Bearer ${managerToken}` } });
    const body = (await listed.json()) as { dialogs?: Array<{ id: number; client: { name: string | null } | null }>; error?: string };
    show(
      `The manager (not an admin, mapped to an operator): view=${view} -> HTTP ${listed.status}`,
      body.error ?? (body.dialogs ?? []).map((item) => `#${item.id} ${item.client?.name ?? '?'}`),
    );
  }

  step(
    'Open Channels mode: the conversation inside Bitrix24',
    'On the app page, in "Where operators work", the admin switches to Open Channels (the page saves it\n' +
      'with its own page token through PUT /api/settings): our connector is registered in the\n' +
      "portal's Contact Center with its settings page, and its events are bound. In the connector's page\n" +
      'the admin connects Open Channel line 1 to the Chat2Desk account. A client writes in WhatsApp: the\n' +
      'message arrives in the Open Channel chat. A Bitrix24 operator answers there: the answer reaches the\n' +
      'client through Chat2Desk, and the chat shows it delivered. The Chat workspace, opening the dialog,\n' +
      'offers "Open chat": the chat Bitrix24 named when it took the client\'s message.',
  );
  const modePage = await openAppPage(b24, server);
  const switched = await fetch(`${server.url}/api/settings`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${modePage.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ integrationType: 'open_channels' }),
  });
  show(
    `The page's switch: PUT /api/settings {"integrationType":"open_channels"} -> HTTP ${switched.status}`,
    pick((await switched.json()) as Record<string, unknown>, ['integrationType', 'registration', 'openLines']),
  );
  show('Connectors registered in the portal', [...b24.connectors.keys()]);
  const connectorOpen = b24.settingConnectorPageRequest({ line: 1, connector: 'chat2desk' }, { accessToken: b24.issueAuth(1).access_token });
  const connectorHtml = await (await postForm(`${server.url}/connector`, connectorOpen.body, connectorOpen.query)).text();
  const connectorToken = String(
    (JSON.parse(/<script type="application\/json" id="page-data">([\s\S]*?)<\/script>/.exec(connectorHtml)?.[1] ?? '{}') as { token?: unknown }).token ?? '',
  );
  const connected = await fetch(`${server.url}/api/connector/lines/1`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${connectorToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ options: DEFAULT_LINE_OPTIONS }),
  });
  show(
    `The connector page connects line 1 (HTTP ${connected.status})`,
    [...b24.connectorLines.values()].map((state) => `line ${state.line}: active ${state.active}, connected ${state.connected}`),
  );
  const listedLines = await fetch(`${server.url}/api/settings`, { headers: { authorization: `Bearer ${modePage.token}` } });
  show(
    `The app page's "Connected lines" (GET /api/settings -> HTTP ${listedLines.status})`,
    (((await listedLines.json()) as { openLines?: unknown[] }).openLines ?? []) as unknown[],
  );
  const { client: olClient } = c2d.seedClient({ phone: '79035550202', name: 'Pedro 2000', withDialog: 'open' });
  const { webhook: olInbox } = c2d.receiveMessage({ clientId: olClient.id as number, text: 'Hola, ¿tienen envío a domicilio?' });
  show('Pedro wrote in WhatsApp; webhook delivered', await deliverWebhook(c2d, olInbox));
  await server.pipeline.settled(['ol_inbound']);
  const olChat = b24.openLineChats(1).find((chat) => chat.externalChatId === `c${String(olClient.id)}`);
  show(
    'The Open Channel chat in Bitrix24',
    olChat ? { client: `${olChat.name} ${olChat.lastName}`.trim(), messages: olChat.messages.map((message) => `${message.from}: ${message.text}`) } : '(none!)',
  );
  const sentBeforeReply = sentMessageCalls(c2d).length;
  if (olChat) await b24.operatorWrites({ line: 1, externalChatId: olChat.externalChatId, userId: 1, text: 'Sí, enviamos a todo el país.' });
  await server.pipeline.settled(['ol_outbound']);
  show(
    'What Chat2Desk received from the operator',
    sentMessageCalls(c2d)
      .slice(sentBeforeReply)
      .map((call) => pick(call.body as Record<string, unknown>, ['client_id', 'operator_id', 'text'])),
  );
  show(
    'Delivery status the chat got (message ids as an array)',
    b24.connectorStatusReports.flatMap((report) => report.messages.map((message) => ({ ids: message.ids, accepted: message.accepted }))),
  );
  // The Chat workspace's dialog view reads the dialog with the app page's token: in this mode it names
  // the client's Open Channel chat, which its "Open chat" opens in the Bitrix24 messenger.
  const olDialog = c2d.account().dialogs.find((dialog) => dialog.client_id === olClient.id);
  const olRead = await fetch(`${server.url}/api/dialogs/${String(olDialog?.id)}`, { headers: { authorization: `Bearer ${modePage.token}` } });
  show(`The Chat workspace opens Pedro's dialog: GET /api/dialogs/${String(olDialog?.id)} -> HTTP ${olRead.status}`, {
    openChannelChat: ((await olRead.json()) as { openChannelChat?: unknown }).openChannelChat,
    'the Open Channel chat in Bitrix24': olChat?.chatId,
  });

  step(
    'The event log on the app page',
    'The page reads its event log with its own page token (from the page the server rendered): what ran,\n' +
      'for which record and dialog, its status and, had it failed, the next step for the admin.',
  );
  const reopened = await openAppPage(b24, server);
  show('Connection', reopened.connection);
  const log = await fetch(`${server.url}/api/event-log`, { headers: { authorization: `Bearer ${reopened.token}` } });
  const entries = ((await log.json()) as { entries?: Array<Record<string, unknown>> }).entries ?? [];
  show(`GET /api/event-log -> HTTP ${log.status}, newest first`, entries.slice(0, 6).map(describeEntry));

  step('Health check', 'GET /healthz is what a load balancer or monitor polls: database, workers and queue depth.');
  const health = await fetch(`${server.url}/healthz`);
  show('Answer', `${health.status} ${await health.text()}`);
}

// ----- set-up and tear-down ---------------------------------------------------------------------

/**
 * Issue 11: three server processes (real child processes) on one PostgreSQL (the embedded one the
 * tests use), a burst of robot calls spread over them as a load balancer would, and one process
 * killed with kill -9 in the middle: the others take its jobs over once their lease runs out.
 */
async function severalProcesses(): Promise<void> {
  step(
    'Several processes on one PostgreSQL',
    'Three server processes share one PostgreSQL database behind a (simulated) load balancer. 30 robot calls are spread over them; once some messages are out, one process is killed with kill -9. The job lease is 3 s here (JOB_LEASE_SECONDS; 45 s by default).',
  );
  const postgres = await startEmbeddedPostgres();
  const b24 = await startFakeBitrix24();
  const c2d = await startFakeChat2Desk();
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-demo-processes-'));
  const children: Child[] = [];
  try {
    const admin = new pg.Client({ connectionString: postgres.url });
    await admin.connect();
    await admin.query('create database demo');
    await admin.end();
    const databaseUrl = new URL(postgres.url);
    databaseUrl.pathname = '/demo';
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    const urls = ports.map((port) => `http://127.0.0.1:${port}`);
    for (const port of ports) {
      children.push(startChild(stackEnv(b24, c2d, port, dir, { LOG_LEVEL: 'info', DATABASE_URL: databaseUrl.toString(), JOB_LEASE_SECONDS: '3', PORTAL_CONCURRENCY: '6' })));
      await eventually(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200, 30_000, `process on port ${port}`);
    }
    show('Processes', urls.join(', '));
    await installAndConfigure({ b24, c2d, server: { url: urls[0]! } });
    c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    c2d.delayNext({ method: 'POST', path: '/messages' }, 300, 30);
    const calls = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `Order #${i} shipped` }, via: urls[i % urls.length] }),
      ),
    );
    show('Robot calls acknowledged', `${calls.filter((call) => call.status === 200).length} of ${calls.length} (10 through each process)`);
    await eventually(() => c2d.account().messages.length >= 8, 30_000, 'the burst under way');
    const runs = children.map((child) => child.output.join('').split('"msg":"job finished"').length - 1);
    const victim = runs.indexOf(Math.max(...runs));
    const killedAt = Date.now();
    await killHard(children[victim]!);
    show('kill -9', `process ${victim + 1} (${urls[victim]}) after ${c2d.account().messages.length} messages were out`);
    await eventually(() => calls.every((call) => b24.sentEvents.some((event) => event.eventToken === call.eventToken)), 90_000, 'every result');
    await sleep(1_000); // anything sent twice would show up by now
    const perToken = new Map<string, number>();
    for (const call of b24.calls.filter((item) => item.method === 'bizproc.event.send')) {
      const token = String(call.params.EVENT_TOKEN ?? call.params.event_token);
      perToken.set(token, (perToken.get(token) ?? 0) + 1);
    }
    const texts = c2d
      .account()
      .messages.map((message) => String(message.text))
      .filter((text) => text.startsWith('Order #'));
    show('All results back', `${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
    show(
      'Results per robot call at Bitrix24',
      `${calls.filter((call) => perToken.get(call.eventToken) === 1).length} calls reported exactly once, ${calls.filter((call) => (perToken.get(call.eventToken) ?? 0) > 1).length} twice`,
    );
    show('Messages at Chat2Desk', `${texts.length} sent, ${new Set(texts).size} different`);
    const survivors = children.map((child, i) => ({ child, i })).filter(({ i }) => i !== victim);
    show(
      'Taken over',
      survivors.some(({ child }) => child.output.join('').includes('jobs whose lease ran out are queued again'))
        ? "a surviving process logged 'jobs whose lease ran out are queued again'"
        : 'nothing was left with the killed process',
    );
    for (const { i } of survivors) {
      const health = (await (await fetch(`${urls[i]}/healthz`)).json()) as { databaseKind: string; process: { pid: number }; work: unknown };
      show(`GET ${urls[i]}/healthz`, pick(health as unknown as Record<string, unknown>, ['status', 'databaseKind', 'process', 'work']));
    }
  } finally {
    await Promise.all(children.map((child) => killHard(child)));
    await Promise.all([b24.close(), c2d.close()]).catch(() => undefined);
    await postgres.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-demo-'));
  let b24: FakeBitrix24 | undefined;
  let c2d: FakeChat2Desk | undefined;
  let server: RunningServer | undefined;
  try {
    b24 = await startFakeBitrix24();
    c2d = await startFakeChat2Desk();
    const port = await freePort();
    // 127.0.0.1, not localhost: like real Bitrix24, the fake refuses handler URLs whose host has no dot.
    const config = loadConfig({
      PORT: String(port),
      PUBLIC_URL: `http://127.0.0.1:${port}`,
      DATABASE_URL: `file:${join(dir, 'demo.db')}`,
      B24_CLIENT_ID: b24.clientId,
      B24_CLIENT_SECRET: b24.clientSecret,
      B24_OAUTH_URL: b24.oauthUrl,
      CHAT2DESK_API_URL: c2d.url,
      APP_SECRET: 'demo-app-secret-0123456789abcdef',
      LOG_LEVEL: 'silent', // the demo narrates; the server's JSON log would only get in the way
    });
    server = await startServer(config, createLogger(config.logLevel), { hostname: '127.0.0.1' });

    console.log('Chat2Desk <-> Bitrix24 app: a demo against fake services');
    show('Fake Bitrix24 portal', `${b24.portalUrl} (member ${b24.memberId})`);
    show('Fake Chat2Desk API', c2d.url);
    show('Our server', `${server.url} (SQLite in ${dir})`);

    await tour(b24, c2d, server);
    await severalProcesses();
    console.log('\nDemo finished: everything above ran over real HTTP on 127.0.0.1.');
    return 0;
  } catch (error) {
    console.error('\nDemo failed:', error);
    return 1;
  } finally {
    // Close in reverse order so the worker stops before the fakes it talks to go away.
    await server?.close().catch(() => undefined);
    await Promise.all([b24?.close(), c2d?.close()]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

// Exit explicitly with the tour's status: no handle left open (a socket, a timer) may keep an
// idle process around after the demo is over.
process.exit(await main());
