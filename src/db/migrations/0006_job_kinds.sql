-- Jobs get a kind (every existing row is a robot run), the kind's input (the `properties` column,
-- renamed), an optional ordering key and a de-duplication key per portal; the robot-only columns
-- become nullable. SQLite cannot drop NOT NULL in place: the table is rebuilt and copied.
CREATE TABLE `jobs_new` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`public_id` text NOT NULL,
	`member_id` text NOT NULL,
	`dedup_key` text,
	`ordering_key` text,
	`event_token` text,
	`robot_code` text,
	`document_id` text,
	`input` text NOT NULL,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`run_at` integer NOT NULL,
	`lease_until` integer,
	`started_at` integer,
	`deadline_at` integer NOT NULL,
	`confirm_attempts` integer DEFAULT 0 NOT NULL,
	`confirmed_at` integer,
	`checkpoint` text DEFAULT '{}' NOT NULL,
	`last_error` text,
	`return_values` text,
	`log_message` text,
	`report_attempts` integer DEFAULT 0 NOT NULL,
	`report_error` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`finished_at` integer
);
--> statement-breakpoint
INSERT INTO `jobs_new` (`id`, `kind`, `public_id`, `member_id`, `dedup_key`, `event_token`, `robot_code`, `document_id`, `input`, `state`, `attempts`, `run_at`, `lease_until`, `started_at`, `deadline_at`, `confirm_attempts`, `confirmed_at`, `checkpoint`, `last_error`, `return_values`, `log_message`, `report_attempts`, `report_error`, `created_at`, `updated_at`, `finished_at`)
SELECT `id`, 'robot', `public_id`, `member_id`, `event_token`, `event_token`, `robot_code`, `document_id`, `properties`, `state`, `attempts`, `run_at`, `lease_until`, CASE WHEN `attempts` > 0 THEN `updated_at` END, `deadline_at`, `confirm_attempts`, `confirmed_at`, `checkpoint`, `last_error`, `return_values`, `log_message`, `report_attempts`, `report_error`, `created_at`, `updated_at`, `finished_at` FROM `jobs`;
--> statement-breakpoint
DROP TABLE `jobs`;
--> statement-breakpoint
ALTER TABLE `jobs_new` RENAME TO `jobs`;
--> statement-breakpoint
CREATE UNIQUE INDEX `jobs_member_dedup_key` ON `jobs` (`member_id`,`dedup_key`) WHERE `dedup_key` IS NOT NULL;
--> statement-breakpoint
CREATE UNIQUE INDEX `jobs_public_id` ON `jobs` (`public_id`);
--> statement-breakpoint
CREATE INDEX `jobs_due` ON `jobs` (`state`,`run_at`);
--> statement-breakpoint
CREATE INDEX `jobs_member_state` ON `jobs` (`member_id`,`state`);
--> statement-breakpoint
CREATE INDEX `jobs_ordering` ON `jobs` (`member_id`,`ordering_key`,`id`) WHERE `ordering_key` IS NOT NULL;
