"""``stack-backup``: consistent backups of the backend store, the auth database and every
artifact object, with a checksummed manifest, and a verified restore (docs/backup.md)."""
