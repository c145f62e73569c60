-- ArchiveDotOrg_Core 2.0.0, the import rearchitecture (phase 1's "Run schema migrations"): the
-- dashboard's two tables, filled from the existing data, then the indexes every archivedotorg
-- table gets, and one show per archive.org identifier. MySQL commits each DDL statement, so a
-- failure part-way leaves the earlier statements applied; the plan then restores its backup.
CREATE TABLE archivedotorg_artist_status (
    artist_id        INT UNSIGNED NOT NULL PRIMARY KEY,
    shows_total      INT UNSIGNED NOT NULL DEFAULT 0,
    tracks_unmatched INT UNSIGNED NOT NULL DEFAULT 0,
    match_rate       DECIMAL(5, 2) NOT NULL DEFAULT 100.00,
    updated_at       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    KEY archivedotorg_artist_status_rate (match_rate),
    CONSTRAINT archivedotorg_artist_status_artist FOREIGN KEY (artist_id)
        REFERENCES archivedotorg_artist (artist_id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_daily_metrics (
    metric_id      INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    metric_date    DATE NOT NULL,
    artist_id      INT UNSIGNED NOT NULL,
    imports        INT UNSIGNED NOT NULL DEFAULT 0,
    failures       INT UNSIGNED NOT NULL DEFAULT 0,
    tracks_matched INT UNSIGNED NOT NULL DEFAULT 0,
    UNIQUE KEY archivedotorg_daily_metrics_day (metric_date, artist_id),
    CONSTRAINT archivedotorg_daily_metrics_artist FOREIGN KEY (artist_id)
        REFERENCES archivedotorg_artist (artist_id) ON DELETE CASCADE
) ENGINE=InnoDB;

INSERT INTO archivedotorg_artist_status (artist_id, shows_total, tracks_unmatched, match_rate)
SELECT a.artist_id,
       (SELECT COUNT(*) FROM archivedotorg_show_metadata s WHERE s.artist_id = a.artist_id),
       (SELECT COUNT(*) FROM archivedotorg_unmatched_track u WHERE u.artist_id = a.artist_id),
       COALESCE(100 * (1 - (SELECT COUNT(*) FROM archivedotorg_unmatched_track u
                            WHERE u.artist_id = a.artist_id)
                           / NULLIF((SELECT SUM(track_count) FROM archivedotorg_show_metadata s
                                     WHERE s.artist_id = a.artist_id), 0)), 100)
FROM archivedotorg_artist a;

INSERT INTO archivedotorg_daily_metrics (metric_date, artist_id, imports, failures, tracks_matched)
SELECT DATE(started_at), artist_id, COUNT(*), SUM(status = 'failed'), SUM(tracks_matched)
FROM archivedotorg_import_run
GROUP BY DATE(started_at), artist_id;

ALTER TABLE archivedotorg_unmatched_track
    ADD KEY archivedotorg_unmatched_track_artist (artist_id, metaphone);
ALTER TABLE archivedotorg_artwork_overrides
    ADD KEY archivedotorg_artwork_overrides_show (artist_id, show_identifier);
ALTER TABLE archivedotorg_activity_log
    ADD KEY archivedotorg_activity_log_created (created_at);
ALTER TABLE archivedotorg_import_run
    ADD KEY archivedotorg_import_run_status (status, started_at);
-- one show per archive.org identifier: the new importer's upsert relies on it
ALTER TABLE archivedotorg_show_metadata
    ADD UNIQUE KEY archivedotorg_show_metadata_identifier (identifier);
