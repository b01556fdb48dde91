-- The ids the SQLite indexes of the same names hold implicitly (their rowid); see src/db/schema-pg.ts.
DROP INDEX "jobs_due";--> statement-breakpoint
DROP INDEX "jobs_member_state";--> statement-breakpoint
CREATE INDEX "jobs_due" ON "jobs" USING btree ("state","run_at","id");--> statement-breakpoint
CREATE INDEX "jobs_member_state" ON "jobs" USING btree ("member_id","state","id");