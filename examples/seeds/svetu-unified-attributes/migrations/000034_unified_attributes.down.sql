DROP TABLE IF EXISTS unified_attribute_values;
DROP TABLE IF EXISTS unified_category_attributes;
DROP TABLE IF EXISTS unified_attributes;
