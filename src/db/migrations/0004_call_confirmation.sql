ALTER TABLE `jobs` ADD `confirm_attempts` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `jobs` ADD `confirmed_at` integer;--> statement-breakpoint
-- Calls accepted before confirmation existed are confirmed like new ones before they run (again).
UPDATE `jobs` SET `state` = 'confirming' WHERE `state` IN ('queued', 'running');--> statement-breakpoint
ALTER TABLE `portals` ADD `uninstall_requested_at` integer;--> statement-breakpoint
ALTER TABLE `portals` ADD `uninstall_check_at` integer;
