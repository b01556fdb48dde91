CREATE TABLE `c2d_accounts` (
	`account_key` text PRIMARY KEY NOT NULL,
	`valid_from` integer DEFAULT 0 NOT NULL,
	`last_sync_at` integer
);
--> statement-breakpoint
CREATE TABLE `c2d_client_dialogs` (
	`account_key` text NOT NULL,
	`client_id` integer NOT NULL,
	`fetched_at` integer NOT NULL,
	PRIMARY KEY(`account_key`, `client_id`)
);
--> statement-breakpoint
CREATE TABLE `c2d_clients` (
	`account_key` text NOT NULL,
	`id` integer NOT NULL,
	`phone` text,
	`client_phone` text,
	`name` text,
	`assigned_name` text,
	`tags` text DEFAULT '[]' NOT NULL,
	`fetched_at` integer NOT NULL,
	PRIMARY KEY(`account_key`, `id`)
);
--> statement-breakpoint
CREATE TABLE `c2d_dialogs` (
	`account_key` text NOT NULL,
	`id` integer NOT NULL,
	`client_id` integer,
	`state` text NOT NULL,
	`operator_id` integer,
	`channel_id` integer,
	`transport` text,
	`begin_at` text,
	`end_at` text,
	`last_message_text` text,
	`last_message_at` text,
	`last_message_type` text,
	`last_request_id` integer,
	`messages_count` integer,
	`fetched_at` integer NOT NULL,
	PRIMARY KEY(`account_key`, `id`)
);
--> statement-breakpoint
CREATE INDEX `c2d_dialogs_client` ON `c2d_dialogs` (`account_key`,`client_id`);--> statement-breakpoint
CREATE TABLE `c2d_lists` (
	`account_key` text NOT NULL,
	`kind` text NOT NULL,
	`items` text NOT NULL,
	`fetched_at` integer NOT NULL,
	PRIMARY KEY(`account_key`, `kind`)
);
--> statement-breakpoint
CREATE TABLE `c2d_phone_lookups` (
	`account_key` text NOT NULL,
	`phone` text NOT NULL,
	`client_ids` text NOT NULL,
	`fetched_at` integer NOT NULL,
	PRIMARY KEY(`account_key`, `phone`)
);
--> statement-breakpoint
CREATE TABLE `c2d_webhooks` (
	`member_id` text PRIMARY KEY NOT NULL,
	`account_key` text NOT NULL,
	`webhook_id` integer,
	`secret_digest` text NOT NULL,
	`secret` text NOT NULL,
	`status` text NOT NULL,
	`last_delivery_at` integer,
	`last_check_at` integer,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `c2d_webhooks_secret` ON `c2d_webhooks` (`secret_digest`);--> statement-breakpoint
CREATE TABLE `timeline_logs` (
	`member_id` text NOT NULL,
	`dialog_id` integer NOT NULL,
	`document_key` text NOT NULL,
	`comment_id` integer,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`member_id`, `dialog_id`, `document_key`)
);
--> statement-breakpoint
CREATE TABLE `webhook_deliveries` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`member_id` text NOT NULL,
	`account_key` text NOT NULL,
	`dedup_key` text NOT NULL,
	`hook_type` text NOT NULL,
	`body` text NOT NULL,
	`received_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `webhook_deliveries_key` ON `webhook_deliveries` (`member_id`,`dedup_key`);--> statement-breakpoint
CREATE INDEX `webhook_deliveries_account_time` ON `webhook_deliveries` (`account_key`,`received_at`);