-- revision: 0011
-- written by `python -m stablemirror.index.schema_fast` from the migrations; do not edit
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('0011');
CREATE TABLE audit_checkpoints (
	id INTEGER NOT NULL, 
	payload TEXT NOT NULL, 
	signature TEXT NOT NULL, 
	key_id VARCHAR(64) NOT NULL, 
	through_seq BIGINT NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE audit_head (
	id INTEGER NOT NULL, 
	seq BIGINT NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "audit_head" VALUES(1,0,'0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE audit_log (
	seq BIGINT NOT NULL, 
	time FLOAT NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	client VARCHAR(64) NOT NULL, 
	user_agent TEXT NOT NULL, 
	action VARCHAR(64) NOT NULL, 
	repository VARCHAR(255) NOT NULL, 
	reference VARCHAR(255) NOT NULL, 
	digest VARCHAR(160) NOT NULL, 
	result VARCHAR(16) NOT NULL, 
	detail TEXT NOT NULL, 
	request_id VARCHAR(64) NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq)
);
CREATE TABLE auth_bindings (
	id INTEGER NOT NULL, 
	principal_kind VARCHAR(8) NOT NULL, 
	principal VARCHAR(255) NOT NULL, 
	role VARCHAR(32) NOT NULL, 
	pattern VARCHAR(255) NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_auth_bindings UNIQUE (principal_kind, principal, role, pattern)
);
CREATE TABLE auth_keys (
	kid VARCHAR(64) NOT NULL, 
	private_pem TEXT NOT NULL, 
	created_at FLOAT NOT NULL, 
	retired_at FLOAT, 
	PRIMARY KEY (kid)
);
CREATE TABLE auth_policies (
	name VARCHAR(128) NOT NULL, 
	document TEXT NOT NULL, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE auth_principals (
	id INTEGER NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	secret_hash TEXT, 
	tags TEXT NOT NULL, 
	groups TEXT NOT NULL, 
	description TEXT NOT NULL, 
	disabled BOOLEAN NOT NULL, 
	expires_at FLOAT, 
	revoked_at FLOAT, 
	created_at FLOAT NOT NULL, 
	created_by VARCHAR(255) NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_auth_principals_kind_name UNIQUE (kind, name)
);
CREATE TABLE auth_state (
	id INTEGER NOT NULL, 
	version BIGINT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "auth_state" VALUES(1,1);
CREATE TABLE blob_access (
	digest VARCHAR(160) NOT NULL, 
	last_access FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
CREATE TABLE blob_integrity (
	digest VARCHAR(160) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	size BIGINT, 
	verified_at FLOAT, 
	stale_at FLOAT, 
	quarantined_at FLOAT, 
	quarantine_path TEXT, 
	detail TEXT, 
	PRIMARY KEY (digest)
);
CREATE TABLE blobs (
	digest VARCHAR(160) NOT NULL, 
	size BIGINT NOT NULL, 
	pushed_at FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
CREATE TABLE delta_chunks (
	digest VARCHAR(160) NOT NULL, 
	"offset" BIGINT NOT NULL, 
	length INTEGER NOT NULL, 
	hash BLOB NOT NULL, 
	params VARCHAR(64) NOT NULL, 
	PRIMARY KEY (digest, "offset")
);
CREATE TABLE delta_indexed (
	digest VARCHAR(160) NOT NULL, 
	params VARCHAR(64) NOT NULL, 
	chunks INTEGER NOT NULL, 
	indexed_at FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
CREATE TABLE delta_layers (
	digest VARCHAR(160) NOT NULL, 
	repository VARCHAR(255) NOT NULL, 
	manifest VARCHAR(160) NOT NULL, 
	manifest_media_type VARCHAR(255) NOT NULL, 
	size BIGINT NOT NULL, 
	seen_at FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
CREATE TABLE fetch_leases (
	digest VARCHAR(160) NOT NULL, 
	owner VARCHAR(512) NOT NULL, 
	expires_at FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	payload TEXT NOT NULL, 
	state VARCHAR(8) NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	run_at FLOAT NOT NULL, 
	pinned_to VARCHAR(255), 
	lease_owner VARCHAR(255), 
	lease_expires FLOAT, 
	last_error TEXT, 
	dedup_key VARCHAR(255), 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_jobs_dedup_key UNIQUE (dedup_key)
);
CREATE TABLE manifest_refs (
	repo_id INTEGER NOT NULL, 
	manifest_digest VARCHAR(160) NOT NULL, 
	ref_digest VARCHAR(160) NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	PRIMARY KEY (repo_id, manifest_digest, ref_digest), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE manifests (
	repo_id INTEGER NOT NULL, 
	digest VARCHAR(160) NOT NULL, 
	media_type VARCHAR(255) NOT NULL, 
	artifact_type VARCHAR(255), 
	subject VARCHAR(160), 
	annotations TEXT, 
	size INTEGER NOT NULL, 
	content BLOB NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (repo_id, digest), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE mirror_channel_resolutions (
	repository VARCHAR(255) NOT NULL, 
	tag VARCHAR(128) NOT NULL, 
	identity VARCHAR(255) NOT NULL, 
	digest VARCHAR(160) NOT NULL, 
	resolved_at FLOAT NOT NULL, 
	PRIMARY KEY (repository, tag, identity)
);
CREATE TABLE mirror_negative (
	repository VARCHAR(255) NOT NULL, 
	reference VARCHAR(160) NOT NULL, 
	expires_at FLOAT NOT NULL, 
	PRIMARY KEY (repository, reference)
);
CREATE TABLE mirror_tags (
	repo_id INTEGER NOT NULL, 
	name VARCHAR(128) NOT NULL, 
	checked_at FLOAT NOT NULL, 
	PRIMARY KEY (repo_id, name), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE notification_deliveries (
	id INTEGER NOT NULL, 
	endpoint VARCHAR(64) NOT NULL, 
	event_id VARCHAR(64) NOT NULL, 
	body TEXT NOT NULL, 
	created_at FLOAT NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_at FLOAT NOT NULL, 
	last_error TEXT, 
	PRIMARY KEY (id)
);
CREATE TABLE notification_leases (
	endpoint VARCHAR(64) NOT NULL, 
	owner VARCHAR(255), 
	expires FLOAT, 
	PRIMARY KEY (endpoint)
);
CREATE TABLE release_channels (
	repo_id INTEGER NOT NULL, 
	name VARCHAR(128) NOT NULL, 
	entries TEXT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	updated_by VARCHAR(255) NOT NULL, 
	PRIMARY KEY (repo_id, name), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE release_history (
	id INTEGER NOT NULL, 
	repo_id INTEGER NOT NULL, 
	channel VARCHAR(128) NOT NULL, 
	time FLOAT NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	action VARCHAR(16) NOT NULL, 
	from_entries TEXT NOT NULL, 
	to_entries TEXT NOT NULL, 
	reason TEXT NOT NULL, 
	forced BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE release_pulls (
	repo_id INTEGER NOT NULL, 
	version VARCHAR(128) NOT NULL, 
	pulls BIGINT NOT NULL, 
	last_pulled_at FLOAT NOT NULL, 
	PRIMARY KEY (repo_id, version), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE replication_status (
	rule VARCHAR(255) NOT NULL, 
	last_started FLOAT, 
	last_finished FLOAT, 
	last_success FLOAT, 
	last_error TEXT, 
	last_trigger VARCHAR(16), 
	artifacts_copied BIGINT NOT NULL, 
	bytes_copied BIGINT NOT NULL, 
	pending_artifacts BIGINT NOT NULL, 
	pending_bytes BIGINT NOT NULL, 
	oldest_pending FLOAT, 
	current TEXT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (rule)
);
CREATE TABLE repo_blobs (
	repo_id INTEGER NOT NULL, 
	digest VARCHAR(160) NOT NULL, 
	linked_at FLOAT NOT NULL, 
	PRIMARY KEY (repo_id, digest), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE repositories (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
CREATE TABLE scan_blobs (
	digest VARCHAR(160) NOT NULL, 
	analyzer VARCHAR(32) NOT NULL, 
	name TEXT NOT NULL, 
	findings TEXT NOT NULL, 
	size BIGINT NOT NULL, 
	scanned_at FLOAT NOT NULL, 
	PRIMARY KEY (digest, analyzer)
);
CREATE TABLE scan_exemptions (
	repository VARCHAR(255) NOT NULL, 
	digest VARCHAR(160) NOT NULL, 
	document TEXT NOT NULL, 
	signature TEXT NOT NULL, 
	key_id VARCHAR(128) NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (repository, digest)
);
CREATE TABLE scan_manifests (
	repository VARCHAR(255) NOT NULL, 
	digest VARCHAR(160) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	analyzer VARCHAR(32) NOT NULL, 
	findings TEXT NOT NULL, 
	queued_at FLOAT NOT NULL, 
	claimed_at FLOAT, 
	finished_at FLOAT, 
	referrer VARCHAR(160), 
	error TEXT, 
	PRIMARY KEY (repository, digest)
);
CREATE TABLE tags (
	repo_id INTEGER NOT NULL, 
	name VARCHAR(128) NOT NULL, 
	manifest_digest VARCHAR(160) NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (repo_id, name), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE trust_policies (
	pattern VARCHAR(255) NOT NULL, 
	mode VARCHAR(8) NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (pattern)
);
CREATE TABLE trust_policy_keys (
	pattern VARCHAR(255) NOT NULL, 
	role VARCHAR(64) NOT NULL, 
	key_id VARCHAR(80) NOT NULL, 
	public_key TEXT NOT NULL, 
	label VARCHAR(255) NOT NULL, 
	PRIMARY KEY (pattern, role, key_id), 
	FOREIGN KEY(pattern) REFERENCES trust_policies (pattern) ON DELETE CASCADE
);
CREATE TABLE uploads (
	id VARCHAR(64) NOT NULL, 
	repo_id INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(repo_id) REFERENCES repositories (id) ON DELETE CASCADE
);
CREATE TABLE worker_leases (
	name VARCHAR(64) NOT NULL, 
	holder VARCHAR(128) NOT NULL, 
	expires_at FLOAT NOT NULL, 
	PRIMARY KEY (name)
);
CREATE INDEX ix_repo_blobs_digest ON repo_blobs (digest);
CREATE INDEX ix_manifests_subject ON manifests (repo_id, subject);
CREATE INDEX ix_manifest_refs_ref ON manifest_refs (ref_digest);
CREATE INDEX ix_audit_log_time ON audit_log (time);
CREATE INDEX ix_release_history_channel ON release_history (repo_id, channel, id);
CREATE INDEX ix_scan_manifests_status ON scan_manifests (status);
CREATE INDEX ix_delta_chunks_hash ON delta_chunks (hash);
CREATE INDEX ix_jobs_state_run_at ON jobs (state, run_at);
CREATE INDEX ix_jobs_kind_state ON jobs (kind, state);
CREATE INDEX ix_notification_deliveries_endpoint_id ON notification_deliveries (endpoint, id);
