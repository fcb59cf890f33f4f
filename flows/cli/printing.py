"""What verbs print: the tables and lines shared by several verbs (plates, retrieval metrics,
plates without negative controls)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from flows.cli.app import console

__all__ = ["print_plates", "print_metrics", "print_negcon", "pct"]


def print_plates(results: list[dict]) -> None:
    """The plates table of ``ingest``/``run``, then each plate's channels, notes and summary line."""
    t = Table(title="plates")
    for c in ("plate", "status", "layout", "fields", "cells", "quarantined", "seconds"):
        t.add_column(c)
    for r in results:
        t.add_row(r["plate"], r["status"], r["layout"], str(r["n_fields"]), str(r["n_cells"]), str(r["n_quarantined"]),
                  f"{sum(r['seconds'].values()):.1f}" if r["seconds"] else "-")
    console.print(t)
    for r in results:
        if r.get("channel_map"):
            ignored = f" ({r['n_ignored']} file(s) ignored)" if r.get("n_ignored") else ""
            console.print(f"{r['plate']} channels: {r['channel_map']}{ignored}", soft_wrap=True, markup=False)
        for note in r.get("notes") or []:  # where the map came from, paths re-rooted, a map the pixels doubt
            console.print(f"{r['plate']}: {note}", soft_wrap=True, markup=False)
    for r in results:  # one line per plate: what was kept, what was refused and why
        if r.get("summary"):
            console.print(r["summary"], soft_wrap=True)


def pct(x: Any) -> str:
    """A fraction as ``'12.3 %'``; ``'-'`` when it is missing."""
    return f"{100 * x:.1f} %" if isinstance(x, (int, float)) else "-"


def print_metrics(m: dict[str, Any]) -> None:
    """The held-out retrieval tables of ``evaluate``/``run`` (both directions), the split, unscored plates."""
    ncand = m.get("n_candidates", {})
    n101 = ncand.get("hit101", 101) if isinstance(ncand, dict) else 101
    rows = [("cmcl", m["model"]), *[(k.replace("_", " "), v) for k, v in m.get("baselines", {}).items()],
            ("chance", m["chance"])]
    for d, arrow in (("graph_to_image", "molecule → images"), ("image_to_graph", "images → molecule")):
        t = Table(title=f"held-out retrieval, {arrow}: 1 positive among {n101} candidates (MIGA) | whole pool")
        t.add_column("model", no_wrap=True)
        for k in ("Hit@1", "Hit@5", "Hit@10", "MRR", "mean rank", "pool R@10"):
            t.add_column(k, justify="right", no_wrap=True)
        for name, r in rows:
            hr = r.get("hit101", {}).get(d, {})
            fp = r.get("fullpool", {}).get(d, {})
            t.add_row(name, pct(hr.get("hit@1")), pct(hr.get("hit@5")), pct(hr.get("hit@10")),
                      f"{hr.get('mrr', float('nan')):.3f}", f"{hr.get('mean_rank', float('nan')):.1f}",
                      pct(fp.get("recall@10")), style="dim" if name == "chance" else None)
        console.print(t)
    split = m.get("split", {})
    if split:
        console.print("compounds by scaffold split: " + ", ".join(f"{k} {v}" for k, v in split.items()))
    unscored = sorted({p for a in (m.get("activity") or {}).values() for p in a.get("plates_not_scored", [])})
    if unscored:
        console.print(f"[yellow]phenotypic activity: plate(s) {', '.join(unscored)} not scored[/] (no negative-control "
                      f"well; see `cmcl profile --negcon`)", soft_wrap=True)


def print_negcon(profiles: dict[str, Any]) -> None:
    """The store's negative-control labels when they are not the defaults, then one line per plate
    without a negative-control well (normalized against all its wells, activity not scored)."""
    from pipeline.profiles.choices import DEFAULT_NEGCON
    from pipeline.profiles.controls import negcon_key

    if profiles.get("negcon") and negcon_key(profiles["negcon"]) != negcon_key(DEFAULT_NEGCON):
        console.print(f"negative controls: {', '.join(profiles['negcon'])} (kept by the store for its later runs and "
                      f"training; --negcon to change)", soft_wrap=True)
    for plate in profiles.get("plates_without_negcon", []):
        console.print(f"[yellow]plate {plate!r} has no negative-control well[/] ({', '.join(profiles['negcon'])}; "
                      f"see --negcon): normalized against all its wells; its activity is not scored", soft_wrap=True)
