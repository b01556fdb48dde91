-- The CRM record we created (or matched) for a Chat2Desk client, per portal: Telegram and widget
-- clients have no phone, so their second episode finds the record here (src/episodes/).
CREATE TABLE `episode_records` (
	`member_id` text NOT NULL,
	`client_id` integer NOT NULL,
	`entity_type` text NOT NULL,
	`entity_id` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`member_id`, `client_id`)
);
