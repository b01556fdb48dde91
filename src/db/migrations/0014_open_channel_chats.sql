-- Open Channels mode: each Chat2Desk client's latest Open Channel chat in Bitrix24, per portal, as
-- imconnector.send.messages named it (session.CHAT_ID) for the client's last message taken; the
-- Chat workspace's dialog view opens it in the messenger (src/db/open-channel-chats.ts).
CREATE TABLE `open_channel_chats` (
	`member_id` text NOT NULL,
	`client_id` integer NOT NULL,
	`line_id` integer NOT NULL,
	`chat_id` text NOT NULL,
	`im_chat_id` integer NOT NULL,
	`sent_at` integer NOT NULL,
	PRIMARY KEY(`member_id`, `client_id`)
);
