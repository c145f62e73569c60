-- The legacy media tables were never changed, so dropping the unified table restores the old state.
DROP TABLE IF EXISTS media_items;
