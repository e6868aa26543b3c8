-- Templates, immutable versions, labels (with their history), playground runs, API keys.
-- Times are Unix milliseconds; JSON is stored as TEXT (the same schema on Postgres).
CREATE TABLE templates (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    language TEXT NOT NULL,
    source TEXT NOT NULL,
    version_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE template_versions (
    template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    spec TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    note TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (template_id, version)
);

-- A version is immutable: the database itself refuses to rewrite one.
CREATE FUNCTION template_versions_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'template versions are immutable';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER template_versions_immutable BEFORE UPDATE ON template_versions
FOR EACH ROW EXECUTE FUNCTION template_versions_immutable();

CREATE TABLE labels (
    template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (template_id, label)
);

CREATE TABLE label_events (
    id BIGSERIAL PRIMARY KEY,
    template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    from_version BIGINT,
    to_version BIGINT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    template_id BIGINT REFERENCES templates(id) ON DELETE CASCADE,
    version BIGINT,
    variables TEXT NOT NULL,
    prompt TEXT NOT NULL,
    parameters TEXT NOT NULL,
    output TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX runs_by_template ON runs (template_id, id);

CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
