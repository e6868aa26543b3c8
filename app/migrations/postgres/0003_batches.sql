-- Batch jobs in OpenAI's shape (files in, files out), shared by replicas. Each request
-- line is a row that a replica claims under a lease; eval runs get the same ownership.
-- Times are Unix milliseconds; JSON is stored as TEXT.
ALTER TABLE eval_runs ADD COLUMN owner TEXT;
ALTER TABLE eval_runs ADD COLUMN lease_until BIGINT;

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT,
    total BIGINT NOT NULL,
    output_file_id TEXT,
    error_file_id TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    in_progress_at BIGINT,
    expires_at BIGINT NOT NULL,
    finalizing_at BIGINT,
    completed_at BIGINT,
    failed_at BIGINT,
    expired_at BIGINT,
    cancelling_at BIGINT,
    cancelled_at BIGINT
);
CREATE INDEX batches_by_status ON batches (status, created_at);

CREATE TABLE batch_lines (
    id BIGSERIAL PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    line_no BIGINT NOT NULL,
    custom_id TEXT NOT NULL,
    -- Lines sharing a prompt prefix (or template) are claimed together: prefix-cache hits.
    group_key TEXT NOT NULL,
    body TEXT NOT NULL,
    -- pending | claimed | done | failed | cancelled | expired
    status TEXT NOT NULL,
    owner TEXT,
    lease_until BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    status_code BIGINT,
    response TEXT,
    finished_at BIGINT,
    UNIQUE (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX batch_lines_open ON batch_lines (batch_id, status, group_key, line_no);
CREATE INDEX batch_lines_by_owner ON batch_lines (owner, status);
