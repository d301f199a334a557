"""The embedded default: the whole stack as local processes, no Docker and no cloud account."""
