"""`make env`: a Compose-ready .env from .env.example, every empty secret filled in at random.

A newcomer's first `docker compose up` should not wait on hand-made passwords. Every line of
the form ``NAME=`` (set but empty: the secrets and user names Compose refuses to start without)
gets a fresh random value; comments and every other line are copied as they are. An existing
.env is never overwritten: it may hold the only copy of the passwords a database was created
with.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

EMPTY = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=$")
BACKUP_IMAGE_USER = 10001  # the backup image's user (Dockerfile)


def random_value(name: str) -> str:
    """A user name for ``*_USER`` / ``*_USERNAME``, else a 32-character secret (MLflow's
    basic auth wants 12+ characters, MinIO 8+)."""
    if name.endswith(("_USER", "_USERNAME")):
        return f"{name.split('_')[0].lower()}-{secrets.token_hex(4)}"
    return secrets.token_hex(16)


def fill_in(template: str) -> tuple[str, list[str]]:
    """The template with every empty ``NAME=`` line given a value; the names filled in."""
    lines, filled = [], []
    for line in template.splitlines():
        match = EMPTY.match(line)
        if match:
            name = match["name"]
            line = f"{name}={random_value(name)}"
            filled.append(name)
        lines.append(line)
    return "\n".join(lines) + "\n", filled


def prepare_backups(text: str, root: Path, uid: int, gid: int, chown=os.chown) -> str:
    """The host folder the backup container writes (BACKUP_HOST_DIR), made now so Docker does
    not make it as root: as root, given to the image's user; as a user in the docker group,
    kept theirs, and the container runs as them (BACKUP_UID/BACKUP_GID)."""
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))
    folder = root / values.get("BACKUP_HOST_DIR", "./backups")
    folder.mkdir(parents=True, exist_ok=True)
    if uid == 0:
        chown(folder, BACKUP_IMAGE_USER, BACKUP_IMAGE_USER)
        return text
    text = re.sub(r"^BACKUP_UID=.*$", f"BACKUP_UID={uid}", text, flags=re.MULTILINE)
    return re.sub(r"^BACKUP_GID=.*$", f"BACKUP_GID={gid}", text, flags=re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=Path(".env.example"))
    parser.add_argument("--output", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)
    if args.output.exists():
        print(
            f"Error: {args.output} exists and may hold the passwords your volumes were made "
            f"with; edit it, or move it away and run make env again",
            file=sys.stderr,
        )
        return 1
    text, filled = fill_in(args.example.read_text())
    text = prepare_backups(text, args.output.parent, os.getuid(), os.getgid())
    args.output.touch(mode=0o600)
    args.output.write_text(text)
    print(f"wrote {args.output} (mode 600) with random values for {', '.join(filled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
