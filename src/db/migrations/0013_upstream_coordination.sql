-- Coordination of upstream calls across several processes (issue 11, docs/multi-process.md). On
-- PostgreSQL these hold the token refresh lease, the Bitrix24 and Chat2Desk budgets and the caps on
-- unverified checks; a SQLite file has one process, which keeps all of it in memory, so here they
-- only mirror PostgreSQL's schema and stay empty.
ALTER TABLE `portals` ADD `refresh_owner` text;--> statement-breakpoint
ALTER TABLE `portals` ADD `refresh_until` integer;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `level` real DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `drained_at` real DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `paused_until` real DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `cut_at` real DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `accepted_second` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `accepted_now` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `c2d_rates` ADD `accepted_before` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE TABLE `rest_budgets` (
	`member_id` text PRIMARY KEY NOT NULL,
	`level` real DEFAULT 0 NOT NULL,
	`drained_at` real DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE `rate_limits` (
	`key` text PRIMARY KEY NOT NULL,
	`points` integer DEFAULT 0 NOT NULL,
	`expire` integer
);
