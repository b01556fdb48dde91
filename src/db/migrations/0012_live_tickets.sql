-- Live stream tickets (issue 11): a ticket issued by one server process opens one stream on whichever
-- process the page reaches, taken once (DELETE … RETURNING); stored as its SHA-256 (src/live/tickets.ts).
-- And the index /healthz counts every process's recently finished runs by (JobStore.workShare).
CREATE TABLE `live_tickets` (
	`ticket_hash` text PRIMARY KEY NOT NULL,
	`grant` text NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `live_tickets_expires` ON `live_tickets` (`expires_at`);
--> statement-breakpoint
CREATE INDEX `jobs_finished` ON `jobs` (`finished_at`) WHERE `finished_at` IS NOT NULL;
