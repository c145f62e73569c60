-- 000034: the unified attributes schema (one attribute table for every category).
CREATE TABLE IF NOT EXISTS unified_attributes (
    id            BIGSERIAL PRIMARY KEY,
    code          VARCHAR(100) NOT NULL UNIQUE,
    name          VARCHAR(255) NOT NULL,
    attribute_type VARCHAR(50) NOT NULL,
    options       JSONB        NOT NULL DEFAULT '{}'::jsonb,
    is_searchable BOOLEAN      NOT NULL DEFAULT false,
    is_filterable BOOLEAN      NOT NULL DEFAULT false,
    legacy_category_attribute_id BIGINT,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS unified_category_attributes (
    category_id  BIGINT  NOT NULL,
    attribute_id BIGINT  NOT NULL REFERENCES unified_attributes (id) ON DELETE CASCADE,
    is_required  BOOLEAN NOT NULL DEFAULT false,
    sort_order   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (category_id, attribute_id)
);

CREATE TABLE IF NOT EXISTS unified_attribute_values (
    id           BIGSERIAL PRIMARY KEY,
    entity_type  VARCHAR(50) NOT NULL,
    entity_id    BIGINT      NOT NULL,
    attribute_id BIGINT      NOT NULL REFERENCES unified_attributes (id) ON DELETE CASCADE,
    text_value   TEXT,
    numeric_value NUMERIC(20, 6),
    boolean_value BOOLEAN,
    json_value   JSONB,
    UNIQUE (entity_type, entity_id, attribute_id)
);

CREATE INDEX IF NOT EXISTS idx_unified_attribute_values_entity
    ON unified_attribute_values (entity_type, entity_id);
