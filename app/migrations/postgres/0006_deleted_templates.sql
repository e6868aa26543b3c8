-- Shipped templates a user deleted: the library import at start skips them, so a deleted
-- template stays deleted (`studio serve --restore-library` clears this list).
CREATE TABLE deleted_templates (
    name TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
