-- Whether a dashboard user wants the weekly summaries by e-mail.
ALTER TABLE users ADD COLUMN weekly_summary INTEGER NOT NULL DEFAULT 1;
