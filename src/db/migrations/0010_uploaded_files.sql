-- Files a user uploads in the CRM tab or the Chat workspace, to be handed to Chat2Desk by URL
-- (Chat2Desk takes files only as direct public links, docs/protocols.md C8, C18). The bytes live in
-- the row (issue 11 will need a store shared between processes); `secret` is the unguessable part of
-- the public link, and the row is deleted by the hourly maintenance once `expires_at` has passed.
CREATE TABLE `uploaded_files` (
	`id` text PRIMARY KEY NOT NULL,
	`secret` text NOT NULL,
	`member_id` text NOT NULL,
	`user_id` integer NOT NULL,
	`name` text NOT NULL,
	`type` text NOT NULL,
	`size` integer NOT NULL,
	`bytes` blob NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `uploaded_files_secret` ON `uploaded_files` (`secret`);
--> statement-breakpoint
CREATE INDEX `uploaded_files_expires` ON `uploaded_files` (`expires_at`);
