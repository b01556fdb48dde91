import type { Chat2DeskChannel, Chat2DeskTag } from '../chat2desk/client.js';
import type { DialogDirectory } from '../chat2desk/directory.js';
import type { OpenLineStore } from '../db/open-lines.js';
import type { Portal } from '../db/portals.js';
import type { PageLanguage } from '../pages/i18n.js';
import type { OpenChannelsConnector, OpenLine } from './connector.js';
import { CONNECTOR_ID } from './connector.js';
import { DEFAULT_LINE_OPTIONS, type LineOptions, readLineOptions } from './lines.js';

/** What SETTING_CONNECTOR posts in PLACEMENT_OPTIONS (pages-and-modes.md §2.1), as far as we read it. */
export interface ConnectorPlacement {
  connector: string;
  lineId: number;
}

export class ConnectorPageError extends Error {
  override name = 'ConnectorPageError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 404 | 422 | 502,
  ) {
    super(message);
  }
}

/**
 * PLACEMENT=SETTING_CONNECTOR with its options, a JSON string written by the browser: the
 * connector must be ours and LINE a line id (a string in Bitrix24's post).
 */
export function readConnectorPlacement(placement: string, rawOptions: string): ConnectorPlacement {
  if (placement !== 'SETTING_CONNECTOR') throw new ConnectorPageError('This page opens from an Open Channel connector (PLACEMENT=SETTING_CONNECTOR)', 400);
  let options: unknown;
  try {
    options = rawOptions.length <= 4096 ? JSON.parse(rawOptions) : undefined;
  } catch {
    options = undefined;
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new ConnectorPageError('PLACEMENT_OPTIONS must be a JSON object with CONNECTOR and LINE', 400);
  const fields = options as Record<string, unknown>;
  const connector = typeof fields.CONNECTOR === 'string' ? fields.CONNECTOR.toLowerCase() : '';
  if (connector !== CONNECTOR_ID) throw new ConnectorPageError(`CONNECTOR must be ${CONNECTOR_ID}: this page configures the Chat2Desk connector only`, 400);
  const line = typeof fields.LINE === 'number' ? String(fields.LINE) : typeof fields.LINE === 'string' ? fields.LINE : '';
  if (!/^[1-9]\d{0,9}$/.test(line)) throw new ConnectorPageError('LINE must be an Open Channel line id', 400);
  return { connector, lineId: Number(line) };
}

/** The line's page state: what the template and public/connector.js show. */
export interface ConnectorLineView {
  line: OpenLine;
  connected: boolean;
  options: LineOptions;
  channels: Array<Pick<Chat2DeskChannel, 'id' | 'name' | 'phone'>>;
  tags: Array<Pick<Chat2DeskTag, 'id' | 'label'>>;
  /** Chat2Desk could not be asked for channels and tags (no token yet, or it failed). */
  chat2deskError?: string;
}

export interface ConnectorPageDeps {
  connector: Pick<OpenChannelsConnector, 'line' | 'connect' | 'disconnect'>;
  store: OpenLineStore;
  directoryFor(portal: Portal): Promise<DialogDirectory | undefined>;
}

/** The connector settings page's reads and writes for one line (src/routes/connector.ts). */
export class ConnectorPage {
  constructor(private readonly deps: ConnectorPageDeps) {}

  /** The line, checked to exist in the portal (asked with the app's token). */
  async line(portal: Portal, lineId: number): Promise<OpenLine> {
    const line = await this.deps.connector.line(portal, lineId);
    if (!line) throw new ConnectorPageError(`Open Channel line ${lineId} does not exist in this portal`, 404);
    return line;
  }

  async view(portal: Portal, lineId: number): Promise<ConnectorLineView> {
    const line = await this.line(portal, lineId);
    const stored = await this.deps.store.get(portal.memberId, lineId);
    const view: ConnectorLineView = { line, connected: stored !== undefined, options: stored ? readLineOptions(stored.options) : DEFAULT_LINE_OPTIONS, channels: [], tags: [] };
    const choices = await this.#choices(portal);
    if ('error' in choices) view.chat2deskError = choices.error;
    else {
      view.channels = choices.channels.map(({ id, name, phone }) => ({ id, name, phone }));
      view.tags = choices.tags.map(({ id, label }) => ({ id, label }));
    }
    return view;
  }

  /** Connects the line with these (validated) options, or saves them; channels and tags must be the account's. */
  async connect(portal: Portal, lineId: number, options: LineOptions): Promise<ConnectorLineView> {
    await this.line(portal, lineId);
    const choices = await this.#choices(portal);
    if ('error' in choices) throw new ConnectorPageError(`Chat2Desk could not be asked for the account's channels and tags: ${choices.error}`, 502);
    const channelIds = new Set(choices.channels.map((channel) => channel.id));
    const tagIds = new Set(choices.tags.map((tag) => tag.id));
    if (options.route.kind === 'channels') {
      const unknown = options.route.channelIds.filter((id) => !channelIds.has(id));
      if (unknown.length > 0) throw new ConnectorPageError(`route.channelIds: ${unknown.join(', ')} is not a channel of this Chat2Desk account`, 400);
    }
    const namedTags = [...(options.route.kind === 'tags' ? options.route.tagIds : []), ...options.tagFilter.tagIds];
    const unknownTags = namedTags.filter((id) => !tagIds.has(id));
    if (unknownTags.length > 0) {
      const field = options.route.kind === 'tags' && options.route.tagIds.includes(unknownTags[0]!) ? 'route.tagIds' : 'tagFilter.tagIds';
      throw new ConnectorPageError(`${field}: ${unknownTags.join(', ')} is not a tag of this Chat2Desk account`, 400);
    }
    await this.deps.connector.connect(portal, lineId, options);
    return this.view(portal, lineId);
  }

  async disconnect(portal: Portal, lineId: number): Promise<void> {
    await this.deps.connector.disconnect(portal, lineId);
  }

  async #choices(portal: Portal): Promise<{ channels: Chat2DeskChannel[]; tags: Chat2DeskTag[] } | { error: string }> {
    const directory = await this.deps.directoryFor(portal);
    if (!directory) return { error: 'the Chat2Desk API token is not set in the app settings' };
    try {
      return { channels: await directory.channels(), tags: await directory.tags() };
    } catch (error) {
      return { error: error instanceof Error ? error.message : String(error) };
    }
  }
}

export interface ConnectorWords {
  title: string;
  line: string;
  connected: string;
  notConnected: string;
  connect: string;
  save: string;
  disconnect: string;
  routing: string;
  routeDefault: string;
  routeChannels: string;
  routeTags: string;
  channels: string;
  tags: string;
  chatPer: string;
  chatPerClient: string;
  chatPerRequest: string;
  signature: string;
  holdUntilOperator: string;
  postDeliveryErrors: string;
  tagFilter: string;
  tagFilterAll: string;
  tagFilterOnly: string;
  tagFilterExcept: string;
  tagFilterTags: string;
  sendPreviousAfterTagging: string;
  sendPreviousAfterTaggingHint: string;
  saved: string;
  disconnected: string;
  saving: string;
  failed: string;
  noChat2desk: string;
  adminsOnly: string;
}

export const CONNECTOR_WORDS: Record<PageLanguage, ConnectorWords> = {
  en: {
    title: 'Chat2Desk connector',
    line: 'Open Channel',
    connected: 'Connected to Chat2Desk',
    notConnected: 'Not connected',
    connect: 'Connect',
    save: 'Save',
    disconnect: 'Disconnect',
    routing: 'Which conversations come to this line',
    routeDefault: 'Default line: conversations no other line takes',
    routeChannels: 'Conversations of these Chat2Desk channels',
    routeTags: 'Conversations of clients with these tags',
    channels: 'Channels',
    tags: 'Tags',
    chatPer: 'One Open Channel chat per',
    chatPerClient: 'client',
    chatPerRequest: 'request (each new Chat2Desk request opens a new chat)',
    signature: "Sign outgoing messages with the operator's name",
    holdUntilOperator: 'Do not send messages to the Open Channel before an operator joined the dialog in Chat2Desk',
    postDeliveryErrors: 'Post Chat2Desk delivery errors into the Open Channel chat',
    tagFilter: 'Tag filter',
    tagFilterAll: 'Let everything through',
    tagFilterOnly: 'Accept only clients with these tags',
    tagFilterExcept: 'Do not accept clients with these tags',
    tagFilterTags: 'Filter tags',
    sendPreviousAfterTagging: 'Send the earlier messages after the client is tagged',
    sendPreviousAfterTaggingHint:
      'With “Accept only”: messages of a client without these tags wait (up to 30 days) and go in order once the client gets one of them. With “Do not accept” a tag never lets messages in, so this changes nothing.',
    saved: 'Saved',
    disconnected: 'Disconnected',
    saving: 'Saving…',
    failed: 'Not saved',
    noChat2desk: 'Chat2Desk channels and tags are not available',
    adminsOnly: 'Only a Bitrix24 administrator may connect Open Channels to Chat2Desk',
  },
  ru: {
    title: 'Коннектор Chat2Desk',
    line: 'Открытая линия',
    connected: 'Подключена к Chat2Desk',
    notConnected: 'Не подключена',
    connect: 'Подключить',
    save: 'Сохранить',
    disconnect: 'Отключить',
    routing: 'Какие диалоги приходят в эту линию',
    routeDefault: 'Линия по умолчанию: диалоги, которые не взяла другая линия',
    routeChannels: 'Диалоги этих каналов Chat2Desk',
    routeTags: 'Диалоги клиентов с этими тегами',
    channels: 'Каналы',
    tags: 'Теги',
    chatPer: 'Один чат Открытой линии на',
    chatPerClient: 'клиента',
    chatPerRequest: 'обращение (каждое новое обращение Chat2Desk открывает новый чат)',
    signature: 'Подписывать исходящие сообщения именем оператора',
    holdUntilOperator: 'Не отправлять сообщения в Открытую линию, пока оператор не вошёл в диалог в Chat2Desk',
    postDeliveryErrors: 'Отправлять ошибки доставки Chat2Desk в чат Открытой линии',
    tagFilter: 'Фильтр по тегам',
    tagFilterAll: 'Пропускать все',
    tagFilterOnly: 'Принимать только клиентов с этими тегами',
    tagFilterExcept: 'Не принимать клиентов с этими тегами',
    tagFilterTags: 'Теги фильтра',
    sendPreviousAfterTagging: 'Отправлять предыдущие сообщения после установки тега клиенту',
    sendPreviousAfterTaggingHint:
      'При «Принимать только»: сообщения клиента без этих тегов ждут (до 30 дней) и уходят по порядку, когда клиенту поставят один из них. При «Не принимать» тег никого не пропускает, и эта настройка ничего не меняет.',
    saved: 'Сохранено',
    disconnected: 'Отключено',
    saving: 'Сохранение…',
    failed: 'Не сохранено',
    noChat2desk: 'Каналы и теги Chat2Desk недоступны',
    adminsOnly: 'Подключать Открытые линии к Chat2Desk может только администратор Bitrix24',
  },
  es: {
    title: 'Conector Chat2Desk',
    line: 'Canal abierto',
    connected: 'Conectado a Chat2Desk',
    notConnected: 'No conectado',
    connect: 'Conectar',
    save: 'Guardar',
    disconnect: 'Desconectar',
    routing: 'Qué conversaciones llegan a este canal',
    routeDefault: 'Canal predeterminado: las conversaciones que ningún otro canal toma',
    routeChannels: 'Conversaciones de estos canales de Chat2Desk',
    routeTags: 'Conversaciones de clientes con estas etiquetas',
    channels: 'Canales',
    tags: 'Etiquetas',
    chatPer: 'Un chat del Canal abierto por',
    chatPerClient: 'cliente',
    chatPerRequest: 'solicitud (cada nueva solicitud de Chat2Desk abre un chat nuevo)',
    signature: 'Firmar los mensajes salientes con el nombre de la operadora',
    holdUntilOperator: 'No enviar mensajes al Canal abierto antes de que la operadora entre en el diálogo en Chat2Desk',
    postDeliveryErrors: 'Enviar los errores de entrega de Chat2Desk al chat del Canal abierto',
    tagFilter: 'Filtro de etiquetas',
    tagFilterAll: 'Dejar pasar todo',
    tagFilterOnly: 'Aceptar sólo clientes con estas etiquetas',
    tagFilterExcept: 'No aceptar clientes con estas etiquetas',
    tagFilterTags: 'Etiquetas del filtro',
    sendPreviousAfterTagging: 'Enviar los mensajes anteriores después de etiquetar al cliente',
    sendPreviousAfterTaggingHint:
      'Con «Aceptar sólo»: los mensajes de un cliente sin estas etiquetas esperan (hasta 30 días) y se envían en orden cuando recibe una de ellas. Con «No aceptar» una etiqueta nunca deja pasar mensajes, así que esto no cambia nada.',
    saved: 'Guardado',
    disconnected: 'Desconectado',
    saving: 'Guardando…',
    failed: 'No guardado',
    noChat2desk: 'Los canales y etiquetas de Chat2Desk no están disponibles',
    adminsOnly: 'Sólo un administrador de Bitrix24 puede conectar Canales abiertos a Chat2Desk',
  },
};
