-- Unify the per-type media tables into one media repository.
-- The legacy tables stay untouched (backward compatibility); the down migration drops the new one.
CREATE TABLE IF NOT EXISTS media_items (
    id          BIGSERIAL PRIMARY KEY,
    legacy_kind TEXT        NOT NULL CHECK (legacy_kind IN ('image', 'video', 'document')),
    legacy_id   BIGINT      NOT NULL,
    owner_id    BIGINT,
    filename    TEXT        NOT NULL,
    mime_type   TEXT,
    size_bytes  BIGINT,
    storage_key TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (legacy_kind, legacy_id)
);
CREATE INDEX IF NOT EXISTS media_items_owner_idx ON media_items (owner_id);

DO $$
BEGIN
    IF to_regclass('images') IS NOT NULL THEN
        INSERT INTO media_items (legacy_kind, legacy_id, owner_id, filename, mime_type, size_bytes, storage_key, created_at)
        SELECT 'image', id, owner_id, filename, mime_type, size_bytes, storage_key, created_at FROM images
        ON CONFLICT (legacy_kind, legacy_id) DO NOTHING;
    END IF;
    IF to_regclass('videos') IS NOT NULL THEN
        INSERT INTO media_items (legacy_kind, legacy_id, owner_id, filename, mime_type, size_bytes, storage_key, created_at)
        SELECT 'video', id, owner_id, filename, mime_type, size_bytes, storage_key, created_at FROM videos
        ON CONFLICT (legacy_kind, legacy_id) DO NOTHING;
    END IF;
    IF to_regclass('documents') IS NOT NULL THEN
        INSERT INTO media_items (legacy_kind, legacy_id, owner_id, filename, mime_type, size_bytes, storage_key, created_at)
        SELECT 'document', id, owner_id, filename, mime_type, size_bytes, storage_key, created_at FROM documents
        ON CONFLICT (legacy_kind, legacy_id) DO NOTHING;
    END IF;
END $$;
