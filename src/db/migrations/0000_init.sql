CREATE TABLE `jobs` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`public_id` text NOT NULL,
	`member_id` text NOT NULL,
	`event_token` text NOT NULL,
	`robot_code` text NOT NULL,
	`document_id` text NOT NULL,
	`properties` text NOT NULL,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`run_at` integer NOT NULL,
	`lease_until` integer,
	`deadline_at` integer NOT NULL,
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
CREATE UNIQUE INDEX `jobs_member_event_token` ON `jobs` (`member_id`,`event_token`);--> statement-breakpoint
CREATE UNIQUE INDEX `jobs_public_id` ON `jobs` (`public_id`);--> statement-breakpoint
CREATE INDEX `jobs_due` ON `jobs` (`state`,`run_at`);--> statement-breakpoint
CREATE TABLE `portals` (
	`member_id` text PRIMARY KEY NOT NULL,
	`domain` text NOT NULL,
	`client_endpoint` text NOT NULL,
	`status` text NOT NULL,
	`application_token_digest` text NOT NULL,
	`access_token` text,
	`refresh_token` text,
	`access_expires_at` integer DEFAULT 0 NOT NULL,
	`token_generation` integer DEFAULT 0 NOT NULL,
	`installer_user_id` integer,
	`chat2desk_token` text,
	`settings` text DEFAULT '{}' NOT NULL,
	`installed_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
