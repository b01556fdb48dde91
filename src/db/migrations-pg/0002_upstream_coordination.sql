CREATE TABLE "rate_limits" (
	"key" text PRIMARY KEY NOT NULL,
	"points" bigint DEFAULT 0 NOT NULL,
	"expire" bigint
);
--> statement-breakpoint
CREATE TABLE "rest_budgets" (
	"member_id" text PRIMARY KEY NOT NULL,
	"level" double precision DEFAULT 0 NOT NULL,
	"drained_at" double precision DEFAULT 0 NOT NULL
);
--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "level" double precision DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "drained_at" double precision DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "paused_until" double precision DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "cut_at" double precision DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "accepted_second" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "accepted_now" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "c2d_rates" ADD COLUMN "accepted_before" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "portals" ADD COLUMN "refresh_owner" text;--> statement-breakpoint
ALTER TABLE "portals" ADD COLUMN "refresh_until" bigint;