CREATE TABLE "c2d_accounts" (
	"account_key" text PRIMARY KEY NOT NULL,
	"valid_from" bigint DEFAULT 0 NOT NULL,
	"last_sync_at" bigint
);
--> statement-breakpoint
CREATE TABLE "c2d_client_dialogs" (
	"account_key" text NOT NULL,
	"client_id" bigint NOT NULL,
	"fetched_at" bigint NOT NULL,
	CONSTRAINT "c2d_client_dialogs_account_key_client_id_pk" PRIMARY KEY("account_key","client_id")
);
--> statement-breakpoint
CREATE TABLE "c2d_clients" (
	"account_key" text NOT NULL,
	"id" bigint NOT NULL,
	"phone" text,
	"client_phone" text,
	"name" text,
	"assigned_name" text,
	"tags" text DEFAULT '[]' NOT NULL,
	"fetched_at" bigint NOT NULL,
	CONSTRAINT "c2d_clients_account_key_id_pk" PRIMARY KEY("account_key","id")
);
--> statement-breakpoint
CREATE TABLE "c2d_dialogs" (
	"account_key" text NOT NULL,
	"id" bigint NOT NULL,
	"client_id" bigint,
	"state" text NOT NULL,
	"operator_id" bigint,
	"channel_id" bigint,
	"transport" text,
	"begin_at" text,
	"end_at" text,
	"last_message_text" text,
	"last_message_at" text,
	"last_message_type" text,
	"last_request_id" bigint,
	"messages_count" bigint,
	"fetched_at" bigint NOT NULL,
	CONSTRAINT "c2d_dialogs_account_key_id_pk" PRIMARY KEY("account_key","id")
);
--> statement-breakpoint
CREATE TABLE "c2d_lists" (
	"account_key" text NOT NULL,
	"kind" text NOT NULL,
	"items" text NOT NULL,
	"fetched_at" bigint NOT NULL,
	CONSTRAINT "c2d_lists_account_key_kind_pk" PRIMARY KEY("account_key","kind")
);
--> statement-breakpoint
CREATE TABLE "c2d_phone_lookups" (
	"account_key" text NOT NULL,
	"phone" text NOT NULL,
	"client_ids" text NOT NULL,
	"fetched_at" bigint NOT NULL,
	CONSTRAINT "c2d_phone_lookups_account_key_phone_pk" PRIMARY KEY("account_key","phone")
);
--> statement-breakpoint
CREATE TABLE "c2d_rates" (
	"account_key" text PRIMARY KEY NOT NULL,
	"per_minute" double precision NOT NULL,
	"limit_per_minute" double precision,
	"updated_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "c2d_webhooks" (
	"member_id" text PRIMARY KEY NOT NULL,
	"account_key" text NOT NULL,
	"webhook_id" bigint,
	"secret_digest" text NOT NULL,
	"secret" text NOT NULL,
	"status" text NOT NULL,
	"last_delivery_at" bigint,
	"last_check_at" bigint,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "effects" (
	"member_id" text NOT NULL,
	"effect_key" text NOT NULL,
	"state" text NOT NULL,
	"owner" text,
	"lease_until" bigint DEFAULT 0 NOT NULL,
	"attempt_at" bigint NOT NULL,
	"intent" text DEFAULT '{}' NOT NULL,
	"result" text,
	"created_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "effects_member_id_effect_key_pk" PRIMARY KEY("member_id","effect_key")
);
--> statement-breakpoint
CREATE TABLE "episode_records" (
	"member_id" text NOT NULL,
	"client_id" bigint NOT NULL,
	"entity_type" text NOT NULL,
	"entity_id" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "episode_records_member_id_client_id_pk" PRIMARY KEY("member_id","client_id")
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"public_id" text NOT NULL,
	"member_id" text NOT NULL,
	"dedup_key" text,
	"ordering_key" text,
	"event_token" text,
	"robot_code" text,
	"document_id" text,
	"input" text NOT NULL,
	"state" text NOT NULL,
	"attempts" bigint DEFAULT 0 NOT NULL,
	"run_at" bigint NOT NULL,
	"lease_until" bigint,
	"started_at" bigint,
	"deadline_at" bigint NOT NULL,
	"confirm_attempts" bigint DEFAULT 0 NOT NULL,
	"confirmed_at" bigint,
	"last_error" text,
	"return_values" text,
	"log_message" text,
	"report_attempts" bigint DEFAULT 0 NOT NULL,
	"report_error" text,
	"created_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	"finished_at" bigint,
	"phone" text
);
--> statement-breakpoint
CREATE TABLE "open_lines" (
	"member_id" text NOT NULL,
	"line_id" bigint NOT NULL,
	"position" bigint NOT NULL,
	"options" text NOT NULL,
	"connected_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "open_lines_member_id_line_id_pk" PRIMARY KEY("member_id","line_id")
);
--> statement-breakpoint
CREATE TABLE "portals" (
	"member_id" text PRIMARY KEY NOT NULL,
	"domain" text NOT NULL,
	"client_endpoint" text NOT NULL,
	"status" text NOT NULL,
	"application_token_digest" text NOT NULL,
	"access_token" text,
	"refresh_token" text,
	"access_expires_at" bigint DEFAULT 0 NOT NULL,
	"token_generation" bigint DEFAULT 0 NOT NULL,
	"installer_user_id" bigint,
	"uninstall_requested_at" bigint,
	"uninstall_check_at" bigint,
	"uninstall_clean" boolean DEFAULT false NOT NULL,
	"chat2desk_token" text,
	"settings" text DEFAULT '{}' NOT NULL,
	"installed_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "uploaded_files" (
	"id" text PRIMARY KEY NOT NULL,
	"secret" text NOT NULL,
	"member_id" text NOT NULL,
	"user_id" bigint NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"size" bigint NOT NULL,
	"bytes" "bytea" NOT NULL,
	"created_at" bigint NOT NULL,
	"expires_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"member_id" text NOT NULL,
	"account_key" text NOT NULL,
	"dedup_key" text NOT NULL,
	"hook_type" text NOT NULL,
	"body" text NOT NULL,
	"received_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "c2d_dialogs_client" ON "c2d_dialogs" USING btree ("account_key","client_id");--> statement-breakpoint
CREATE UNIQUE INDEX "c2d_webhooks_secret" ON "c2d_webhooks" USING btree ("secret_digest");--> statement-breakpoint
CREATE UNIQUE INDEX "jobs_member_dedup_key" ON "jobs" USING btree ("member_id","dedup_key") WHERE "jobs"."dedup_key" IS NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "jobs_public_id" ON "jobs" USING btree ("public_id");--> statement-breakpoint
CREATE INDEX "jobs_due" ON "jobs" USING btree ("state","run_at");--> statement-breakpoint
CREATE INDEX "jobs_member_state" ON "jobs" USING btree ("member_id","state");--> statement-breakpoint
CREATE INDEX "jobs_ordering" ON "jobs" USING btree ("member_id","ordering_key","id") WHERE "jobs"."ordering_key" IS NOT NULL;--> statement-breakpoint
CREATE INDEX "jobs_member_created" ON "jobs" USING btree ("member_id","created_at","id");--> statement-breakpoint
CREATE INDEX "jobs_member_phone" ON "jobs" USING btree ("member_id","phone","created_at","id") WHERE "jobs"."phone" IS NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "uploaded_files_secret" ON "uploaded_files" USING btree ("secret");--> statement-breakpoint
CREATE INDEX "uploaded_files_expires" ON "uploaded_files" USING btree ("expires_at");--> statement-breakpoint
CREATE UNIQUE INDEX "webhook_deliveries_key" ON "webhook_deliveries" USING btree ("member_id","dedup_key");--> statement-breakpoint
CREATE INDEX "webhook_deliveries_account_time" ON "webhook_deliveries" USING btree ("account_key","received_at");