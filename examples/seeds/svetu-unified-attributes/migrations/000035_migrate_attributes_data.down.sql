-- The legacy tables were never modified, so undoing the data migration empties the unified ones.
TRUNCATE unified_attribute_values, unified_category_attributes, unified_attributes RESTART IDENTITY;
