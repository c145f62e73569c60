-- The Magento database as the rearchitecture finds it (ArchiveDotOrg_Core schema 1.9.0): seven
-- of the nine archivedotorg tables, and the Magento core tables the plan's checks read. Load it
-- into an empty database to rehearse the database phase (examples/seeds/README.md).
CREATE TABLE setup_module (
    module         VARCHAR(50) NOT NULL PRIMARY KEY,
    schema_version VARCHAR(50),
    data_version   VARCHAR(50)
) ENGINE=InnoDB;
INSERT INTO setup_module VALUES ('ArchiveDotOrg_Core', '1.9.0', '1.9.0');

CREATE TABLE patch_list (
    patch_id   INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    patch_name VARCHAR(1024) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE cron_schedule (
    schedule_id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    job_code    VARCHAR(255) NOT NULL DEFAULT '0',
    status      VARCHAR(7)   NOT NULL DEFAULT 'pending',
    executed_at TIMESTAMP    NULL,
    KEY cron_schedule_job_code (job_code)
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_artist (
    artist_id  INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_key VARCHAR(64)  NOT NULL,
    name       VARCHAR(255) NOT NULL,
    collection VARCHAR(255) NOT NULL,
    created_at TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY archivedotorg_artist_key (artist_key)
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_import_run (
    run_id         INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_id      INT UNSIGNED NOT NULL,
    status         VARCHAR(16)  NOT NULL,
    started_at     DATETIME     NOT NULL,
    finished_at    DATETIME     NULL,
    shows_imported INT UNSIGNED NOT NULL DEFAULT 0,
    tracks_matched INT UNSIGNED NOT NULL DEFAULT 0,
    CONSTRAINT archivedotorg_import_run_artist FOREIGN KEY (artist_id)
        REFERENCES archivedotorg_artist (artist_id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_show_metadata (
    show_id       INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_id     INT UNSIGNED NOT NULL,
    identifier    VARCHAR(128) NOT NULL,
    show_date     DATE         NOT NULL,
    venue         VARCHAR(255) NULL,
    track_count   SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    metadata_path VARCHAR(512) NOT NULL,
    CONSTRAINT archivedotorg_show_metadata_artist FOREIGN KEY (artist_id)
        REFERENCES archivedotorg_artist (artist_id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_studio_albums (
    album_id  INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_id INT UNSIGNED NOT NULL,
    title     VARCHAR(255) NOT NULL,
    year      SMALLINT UNSIGNED NULL,
    CONSTRAINT archivedotorg_studio_albums_artist FOREIGN KEY (artist_id)
        REFERENCES archivedotorg_artist (artist_id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_unmatched_track (
    unmatched_id    INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_id       INT UNSIGNED NOT NULL,
    show_identifier VARCHAR(128) NOT NULL,
    track_title     VARCHAR(255) NOT NULL,
    metaphone       VARCHAR(64)  NOT NULL,
    created_at      TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_artwork_overrides (
    override_id     INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_id       INT UNSIGNED NOT NULL,
    show_identifier VARCHAR(128) NOT NULL,
    image_url       VARCHAR(1024) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE archivedotorg_activity_log (
    log_id     BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    artist_id  INT UNSIGNED NULL,
    action     VARCHAR(64)  NOT NULL,
    message    TEXT         NULL,
    created_at TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;
