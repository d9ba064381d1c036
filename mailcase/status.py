"""The status page's data, gathered from the store, and the call that writes it with `notify.statuspage`.

Used by `mailcase status build` and by `serve`; it decides nothing and sends no mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailcase.notify.statuspage import MasterInfo, WindowInfo, build_status_site
from mailcase.store import maintenance as windows_store
from mailcase.store.cases import latest_master_update, master_cases
from mailcase.store.directory import product_names
from mailcase.store.engine import transaction
from mailcase.store.models import Case, MaintenanceWindow


def window_info(window: MaintenanceWindow, products: Sequence[str]) -> WindowInfo:
    """A window as the status page and the feeds see it (the same UID and SEQUENCE as the notices)."""
    assert window.id is not None
    return WindowInfo(
        id=window.id,
        kind=str(window.kind),
        start=window.start,
        end=window.end,
        products=tuple(products),
        description=window.description,
        justification=window.justification,
        status=str(window.status),
        uid=window.uid,
        sequence=window.sequence,
        updated_at=window.updated_at,
    )




def status_snapshot(session: Session, now: datetime) -> tuple[list[WindowInfo], list[MasterInfo], list[str]]:
    """Windows not over for more than a week, open master cases (and those closed in the last day)
    with their latest update, and every product name: what `build_status_site` shows."""
    windows = windows_store.list_windows(session=session, ending_after=now - timedelta(days=8))
    names = windows_store.window_products(session=session, window_ids=[w.id for w in windows if w.id])
    infos = [window_info(w, names.get(w.id or 0, [])) for w in windows]
    masters = [
        m
        for m in master_cases(session=session)
        if not m.status.is_closed or (m.closed_at is not None and m.closed_at > now - timedelta(days=1))
    ]
    master_infos = [_master_info(session, m) for m in masters]
    products = product_names(session=session)
    return infos, master_infos, products


def _master_info(session: Session, master: Case) -> MasterInfo:
    assert master.id is not None
    latest = latest_master_update(session=session, case_id=master.id)
    return MasterInfo(
        number=master.number,
        subject=master.subject,
        platform=master.platform or "",
        status=str(master.status),
        latest_update_text=str(latest.data.get("body", "")) if latest else "",
        latest_update_at=latest.at if latest else None,
        opened_at=master.created_at,
    )


def build_status(
    engine: Engine, out_dir: Path, *, now: datetime, title: str, template_dirs: Sequence[Path], desk_tz: str
) -> list[Path]:
    """Write the static status page (index.html, feed.atom, per-product .ics) into `out_dir`; `serve`
    calls this at every sweep when `[status] out_dir` is set. `template_dirs`: the template search
    path (its `status/` folders hold the page's templates)."""
    with transaction(engine) as session:
        windows, masters, products = status_snapshot(session, now)
    return build_status_site(
        out_dir,
        title=title,
        generated_at=now,
        windows=windows,
        masters=masters,
        templates_dir=[d / "status" for d in template_dirs],
        products=products,
        desk_tz=desk_tz,
    )
