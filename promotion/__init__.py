"""Moving the ``production`` alias: champion/challenger gate, audit tags, rollback."""
