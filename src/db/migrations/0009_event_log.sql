-- The event log (src/db/event-log.ts) reads a portal's jobs newest first and pages by
-- (created_at, id); the phone it filters by is stored normalized when the job is enqueued (digits
-- only, src/event-log.ts `searchablePhone`), since a robot's phone property is free text.
ALTER TABLE `jobs` ADD `phone` text;
--> statement-breakpoint
CREATE INDEX `jobs_member_created` ON `jobs` (`member_id`,`created_at`,`id`);
--> statement-breakpoint
CREATE INDEX `jobs_member_phone` ON `jobs` (`member_id`,`phone`,`created_at`,`id`) WHERE `phone` IS NOT NULL;
--> statement-breakpoint
-- ONAPPUNINSTALL's data[CLEAN] ("delete the app's data", docs/protocols.md B1), kept with the
-- pending request until the portal confirms it: the wipe then deletes the portal's data too.
ALTER TABLE `portals` ADD `uninstall_clean` integer DEFAULT 0 NOT NULL;
