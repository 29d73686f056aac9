"""``export``: a backup's items as standard files, decrypted, so users are never locked in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from drbackup.errors import UsageError
from drbackup.files import atomic_write

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


def export_backup(
    app: AppContext, backup_id: str, output: str, *, database: str | None = None
) -> list[Path]:
    """Write the pg_dump archive (``output``) and the globals SQL (``output.globals.sql``).

    The archive is written to ``output.partial`` and renamed once its digest checked out,
    so a damaged backup never leaves a file that looks complete.
    """
    from drbackup.actions.restore_postgres import pick_item

    repo = app.repository()
    manifest = repo.load_manifest(repo.resolve(backup_id))
    out = Path(output)
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: directory {out.parent} does not exist")
    for path in (out, out.with_name(out.name + ".globals.sql")):
        if path.exists():
            raise UsageError(f"{path} exists; refusing to overwrite")
    written = []
    if manifest.kind == "postgres":
        item = pick_item(manifest, database)
        written.append(_write(repo, item, out))
        globals_items = [i for i in manifest.items if i.name == "globals"]
        if globals_items:
            written.append(_write(repo, globals_items[0], out.with_name(out.name + ".globals.sql")))
    else:
        raise UsageError(f"export of {manifest.kind} backups is not supported")
    return written


def _write(repo, item, path: Path) -> Path:
    """Write one item, readable by its owner only: the data is decrypted, and the globals
    hold the roles' password hashes."""
    with atomic_write(path, mode=0o600) as out, repo.open_item(item) as reader:
        for block in reader:
            out.write(block)
    return path
