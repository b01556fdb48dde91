-- Open Channels mode: each Chat2Desk client's latest Open Channel chat in Bitrix24 (src/db/open-channel-chats.ts;
-- SQLite's migration 0014).
CREATE TABLE "open_channel_chats" (
	"member_id" text NOT NULL,
	"client_id" bigint NOT NULL,
	"line_id" bigint NOT NULL,
	"chat_id" text NOT NULL,
	"im_chat_id" bigint NOT NULL,
	"sent_at" bigint NOT NULL,
	CONSTRAINT "open_channel_chats_member_id_client_id_pk" PRIMARY KEY("member_id","client_id")
);
