CREATE TABLE `c2d_rates` (
	`account_key` text PRIMARY KEY NOT NULL,
	`per_minute` real NOT NULL,
	`limit_per_minute` real,
	`updated_at` integer NOT NULL
);
