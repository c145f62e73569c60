-- 000035: copy the legacy category attributes and listing values into the unified tables.
-- The legacy tables are left in place: dual-write keeps them current until finalization.
DO $$
BEGIN
    IF to_regclass('category_attributes') IS NOT NULL THEN
        INSERT INTO unified_attributes (code, name, attribute_type, options, is_searchable,
                                        is_filterable, legacy_category_attribute_id)
        SELECT ca.name, COALESCE(ca.display_name, ca.name), ca.attribute_type,
               COALESCE(ca.options, '{}'::jsonb), ca.is_searchable, ca.is_filterable, ca.id
        FROM category_attributes ca
        ON CONFLICT (code) DO NOTHING;
    END IF;
    IF to_regclass('category_attribute_mapping') IS NOT NULL THEN
        INSERT INTO unified_category_attributes (category_id, attribute_id, is_required, sort_order)
        SELECT m.category_id, ua.id, m.is_required, m.sort_order
        FROM category_attribute_mapping m
        JOIN unified_attributes ua ON ua.legacy_category_attribute_id = m.attribute_id
        ON CONFLICT DO NOTHING;
    END IF;
    IF to_regclass('listing_attribute_values') IS NOT NULL THEN
        INSERT INTO unified_attribute_values (entity_type, entity_id, attribute_id, text_value,
                                              numeric_value, boolean_value, json_value)
        SELECT 'listing', v.listing_id, ua.id, v.text_value, v.numeric_value, v.boolean_value,
               v.json_value
        FROM listing_attribute_values v
        JOIN unified_attributes ua ON ua.legacy_category_attribute_id = v.attribute_id
        ON CONFLICT (entity_type, entity_id, attribute_id) DO NOTHING;
    END IF;
END $$;
