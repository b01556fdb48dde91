CREATE TABLE `effects` (
	`member_id` text NOT NULL,
	`effect_key` text NOT NULL,
	`state` text NOT NULL,
	`owner` text,
	`lease_until` integer DEFAULT 0 NOT NULL,
	`attempt_at` integer NOT NULL,
	`intent` text DEFAULT '{}' NOT NULL,
	`result` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`member_id`, `effect_key`)
);
--> statement-breakpoint
-- Sends in doubt: POST /messages was attempted and the run has not finished. The claim has no lease
-- left, so the run's next attempt settles it (looks for the message) before it could send again.
-- The intent is what src/activities/send-message.ts stores with a claim: the external_id the old code
-- sent (`b24-<public id>`), and the text digest only when there was a text.
INSERT INTO `effects` (`member_id`, `effect_key`, `state`, `owner`, `lease_until`, `attempt_at`, `intent`, `result`, `created_at`, `updated_at`)
SELECT `member_id`, 'run:' || `public_id` || ':message', 'claimed', `public_id`, 0,
	coalesce(json_extract(`checkpoint`, '$.attemptAt'), `created_at`),
	json_patch(
		json_object('clientId', json_extract(`checkpoint`, '$.clientId'), 'externalId', 'b24-' || `public_id`),
		CASE WHEN json_extract(`checkpoint`, '$.textDigest') IS NULL THEN '{}' ELSE json_object('textDigest', json_extract(`checkpoint`, '$.textDigest')) END
	),
	NULL, `updated_at`, `updated_at`
FROM `jobs`
WHERE `state` IN ('queued', 'running') AND json_extract(`checkpoint`, '$.sendAttempted') AND json_extract(`checkpoint`, '$.clientId') IS NOT NULL;
--> statement-breakpoint
-- The client those runs chose (and for write first, created, with the route it was created on): a
-- retry sends to the same client the same way.
INSERT INTO `effects` (`member_id`, `effect_key`, `state`, `owner`, `lease_until`, `attempt_at`, `intent`, `result`, `created_at`, `updated_at`)
SELECT `member_id`, 'run:' || `public_id` || ':client', 'done', `public_id`, 0, `created_at`, '{}',
	json_object(
		'clientId', json_extract(`checkpoint`, '$.clientId'),
		'writeFirst', CASE WHEN json_extract(`checkpoint`, '$.writeFirst') THEN json('true') ELSE json('false') END,
		'route', json_extract(`checkpoint`, '$.route')
	),
	`updated_at`, `updated_at`
FROM `jobs`
WHERE `state` IN ('queued', 'running') AND json_extract(`checkpoint`, '$.clientId') IS NOT NULL;
--> statement-breakpoint
-- The Log robot's comments: written ones are done; claims without a comment id (a write in progress
-- or of unknown outcome) have no owner left and are settled by looking at the timeline.
INSERT INTO `effects` (`member_id`, `effect_key`, `state`, `owner`, `lease_until`, `attempt_at`, `intent`, `result`, `created_at`, `updated_at`)
SELECT `member_id`, 'comment:' || `dialog_id` || ':' || `document_key`,
	CASE WHEN `comment_id` IS NULL THEN 'claimed' ELSE 'done' END,
	NULL, 0, `created_at`, '{}',
	CASE WHEN `comment_id` IS NULL THEN NULL ELSE json_object('commentId', `comment_id`) END,
	`created_at`, coalesce(`unknown_since`, `created_at`)
FROM `timeline_logs`;
--> statement-breakpoint
DROP TABLE `timeline_logs`;
--> statement-breakpoint
ALTER TABLE `jobs` DROP COLUMN `checkpoint`;
