"""Primary/standby replication with a witness. See docs/replication.md."""
