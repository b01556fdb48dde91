-- Open Channels mode (issue 10): the Bitrix24 Open Channel lines a portal connected to its Chat2Desk
-- account through our connector's settings page (SETTING_CONNECTOR), with each line's options (JSON,
-- src/open-channels/lines.ts) and its place in the routing order (lower first). A line deleted in
-- Bitrix24 (OnImConnectorLineDelete) or disconnected is removed.
CREATE TABLE `open_lines` (
	`member_id` text NOT NULL,
	`line_id` integer NOT NULL,
	`position` integer NOT NULL,
	`options` text NOT NULL,
	`connected_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`member_id`, `line_id`)
);
