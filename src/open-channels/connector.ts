/** Our Open Channels connector's id in Bitrix24 (imconnector.register ID: [a-z0-9_], bitrix24.md §12). */
export const CONNECTOR_ID = 'chat2desk';
