-- Evaluate and tune: a template's test set, eval runs and their per-row results, the
-- production eval gate. Times are Unix milliseconds; JSON is stored as TEXT.
ALTER TABLE templates ADD COLUMN eval_gate BIGINT NOT NULL DEFAULT 0;

CREATE TABLE test_cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    variables TEXT NOT NULL,
    expected TEXT,
    assertions TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX test_cases_by_template ON test_cases (template_id, position);

CREATE TABLE eval_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    -- NULL for an unsaved draft spec.
    version BIGINT,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    total BIGINT NOT NULL,
    done BIGINT NOT NULL DEFAULT 0,
    passed BIGINT NOT NULL DEFAULT 0,
    n BIGINT NOT NULL,
    temperature DOUBLE PRECISION NOT NULL,
    seed BIGINT NOT NULL,
    max_tokens BIGINT NOT NULL,
    model TEXT NOT NULL,
    tp BIGINT NOT NULL,
    stability_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX eval_runs_by_template ON eval_runs (template_id, id);
CREATE INDEX eval_runs_by_status ON eval_runs (status);

CREATE TABLE eval_results (
    run_id BIGINT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    test_id BIGINT,
    variables TEXT NOT NULL,
    expected TEXT,
    output TEXT NOT NULL,
    samples TEXT NOT NULL,
    stability DOUBLE PRECISION NOT NULL,
    passed BIGINT NOT NULL,
    assertions TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (run_id, idx)
);
