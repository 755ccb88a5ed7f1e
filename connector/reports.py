"""The funnel report: per object, records per stage now, and how records moved through the stages.

Counted from `records` (deleted records are out of the funnel) and the history in `transitions`:
only moves count (not suppressed decisions, not unlocks or same-stage sets), in the order the
engine applied them. With `since`, only moves at or after it count.

Per stage S:
- count: records in S now;
- entered: records that entered S in the period (a record entering twice counts once: its first entry);
- converted: of those, the records that afterwards reached a stage later in funnel order that is not
  a not-succeeded stage (not defined for not-succeeded stages, nor where no such stage follows);
- median time in stage: over the stays in S that began in the period and have ended (open stays wait);
- lost: of the entrants, the records whose stay that began at their first entry ended with a move to
  a not-succeeded stage.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import or_, select

from connector.config import SyncedObject
from connector.engine import Engine
from connector.mapping import Category, StageMapping
from connector.store import repo
from connector.store.schema import Record, TransitionRow

CATEGORY_ORDER = (Category.IN_PROGRESS, Category.SUCCEEDED, Category.NOT_SUCCEEDED)
CATEGORY_LABEL = {
    Category.IN_PROGRESS: "in progress",
    Category.SUCCEEDED: "succeeded",
    Category.NOT_SUCCEEDED: "not succeeded",
}


@dataclass(frozen=True)
class Move:
    record_id: int
    at: datetime
    from_stage: str | None
    to_stage: str | None  # None: deleted in the CRM


@dataclass(frozen=True)
class StageFunnel:
    stage: str
    category: Category
    count: int
    entered: int
    converted: int | None  # None: no later stage to reach (or a not-succeeded stage)
    lost: int | None  # None for not-succeeded stages
    median: timedelta | None
    stays: int  # completed stays the median is taken over

    @property
    def conversion(self) -> float | None:
        return None if self.converted is None or not self.entered else self.converted / self.entered

    @property
    def lost_share(self) -> float | None:
        return None if self.lost is None or not self.entered else self.lost / self.entered


@dataclass(frozen=True)
class Overall:
    """The funnel end to end: records that entered the first stage, and of those, reached a succeeded one."""

    first_stage: str
    entered: int
    succeeded: int

    @property
    def rate(self) -> float | None:
        return self.succeeded / self.entered if self.entered else None


ENTERED_NOTE = (
    "Each bar counts the records that entered the stage in the period, so bars need not shrink from "
    "stage to stage: a record may skip a stage, or have entered an earlier one before the period."
)


@dataclass(frozen=True)
class ObjectFunnel:
    source: str
    object: str
    since: datetime | None
    stages: list[StageFunnel]
    unstaged: dict[str, int] = field(default_factory=dict)  # records in no stage, or one the mapping lost
    overall: Overall | None = None
    until: datetime | None = None  # the report's instant: the period's end

    @property
    def period(self) -> str:
        if self.since:
            end = f" to {self.until:%Y-%m-%d %H:%M}" if self.until else ""
            return f"moves from {self.since:%Y-%m-%d %H:%M}{end} UTC"
        return f"all moves up to {self.until:%Y-%m-%d %H:%M} UTC" if self.until else "all moves"

    @property
    def records(self) -> int:
        return sum(s.count for s in self.stages) + sum(self.unstaged.values())

    def by_category(self) -> Iterator[tuple[Category, list[StageFunnel]]]:
        for category in CATEGORY_ORDER:
            stages = [s for s in self.stages if s.category is category]
            if stages:
                yield category, stages


# --- the numbers (pure) ----------------------------------------------------------------------------
@dataclass
class _Tally:
    entered: int = 0
    converted: int = 0
    lost: int = 0
    durations: list[float] = field(default_factory=list)


def _reaches_later(mapping: StageMapping, stage: str) -> set[str]:
    """The stages that count as progress from `stage`: later in funnel order and not not-succeeded."""
    index = mapping.index(stage)
    return {
        s.name for s in mapping.stages if mapping.index(s.name) > index and s.category is not Category.NOT_SUCCEEDED
    }


def compute_funnel(
    mapping: StageMapping, moves: Iterable[Move], counts: dict[str | None, int]
) -> tuple[list[StageFunnel], dict[str, int]]:
    """The per-stage numbers from the moves (grouped by record, in the order they happened) and counts now."""
    later = {name: _reaches_later(mapping, name) for name in mapping.stage_names}
    tallies = {name: _Tally() for name in mapping.stage_names}
    for _, group in groupby(moves, key=lambda m: m.record_id):
        history = list(group)
        seen: set[str] = set()
        for i, move in enumerate(history):
            stage = move.to_stage
            if stage is None or stage not in tallies:
                continue
            tally = tallies[stage]
            exit_move = history[i + 1] if i + 1 < len(history) else None
            if exit_move is not None:
                tally.durations.append(max(0.0, (exit_move.at - move.at).total_seconds()))
            if stage in seen:
                continue
            seen.add(stage)
            tally.entered += 1
            if any(m.to_stage in later[stage] for m in history[i + 1 :]):
                tally.converted += 1
            if exit_move is not None and exit_move.to_stage and mapping.has_stage(exit_move.to_stage) and (
                mapping.category(exit_move.to_stage) is Category.NOT_SUCCEEDED
            ):
                tally.lost += 1
    stages = []
    for spec in mapping.stages:
        tally = tallies[spec.name]
        lost_applies = spec.category is not Category.NOT_SUCCEEDED
        stages.append(
            StageFunnel(
                stage=spec.name,
                category=spec.category,
                count=counts.get(spec.name, 0),
                entered=tally.entered,
                converted=tally.converted if lost_applies and later[spec.name] else None,
                lost=tally.lost if lost_applies else None,
                median=timedelta(seconds=statistics.median(tally.durations)) if tally.durations else None,
                stays=len(tally.durations),
            )
        )
    unstaged = {("(no stage)" if k is None else k): v for k, v in counts.items() if not mapping.has_stage(k or "")}
    return stages, unstaged


def overall_conversion(mapping: StageMapping, moves: Iterable[Move]) -> Overall | None:
    """Of the records that entered the first stage, how many reached a succeeded stage afterwards."""
    if not mapping.stages:
        return None
    first = mapping.stages[0].name
    succeeded = {s.name for s in mapping.stages if s.category is Category.SUCCEEDED}
    entered = reached = 0
    for _, group in groupby(moves, key=lambda m: m.record_id):
        history = [m.to_stage for m in group]
        if first not in history:
            continue
        entered += 1
        if any(stage in succeeded for stage in history[history.index(first) + 1 :]):
            reached += 1
    return Overall(first, entered, reached)


# --- reading the store -----------------------------------------------------------------------------
def _moves(engine: Engine, synced: SyncedObject, since: datetime | None) -> list[Move]:
    t, r = TransitionRow, Record
    query = (
        select(t.record_id, t.at, t.from_stage, t.to_stage)
        .join(r, r.id == t.record_id)
        .where(r.source == synced.source, r.object == synced.name, ~r.deleted, ~t.suppressed)
        .where(or_(t.from_stage.is_(None), t.to_stage.is_(None), t.from_stage != t.to_stage))
        .order_by(t.record_id, t.id)
    )
    if since is not None:
        query = query.where(t.at >= since)
    with engine.store.transaction() as session:
        rows = session.execute(query)
        return [Move(row.record_id, row.at, row.from_stage, row.to_stage) for row in rows]


def funnel(
    engine: Engine, objects: Iterable[SyncedObject], since: datetime | None = None, until: datetime | None = None
) -> list[ObjectFunnel]:
    result = []
    for synced in objects:
        with engine.store.transaction() as session:
            counts = repo.stage_counts(session, synced.source, synced.name)
        moves = _moves(engine, synced, since)
        stages, unstaged = compute_funnel(synced.mapping, moves, counts)
        overall = overall_conversion(synced.mapping, moves)
        result.append(ObjectFunnel(synced.source, synced.name, since, stages, unstaged, overall, until))
    return result


# --- rendering -------------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def human_duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = value.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _share(part: int | None, whole: float | None) -> str:
    if part is None:
        return "—"
    return f"{part} ({whole:.0%})" if whole is not None else f"{part}"


def render_table(funnels: list[ObjectFunnel]) -> str:
    lines: list[str] = []
    for obj in funnels:
        lines.append(f"{obj.source} {obj.object}: {obj.period}; {obj.records} records now")
        width = max([len(s.stage) for s in obj.stages] + [13]) + 4
        head = (
            f"  {'stage':<{width}}{'now':>6}{'entered':>9}  {'reached a later stage':<24}"
            f"{'median (stays)':<18}{'left for not succeeded'}"
        )
        lines.append(head)
        for category, stages in obj.by_category():
            total = sum(s.count for s in stages)
            lines.append(f"  {CATEGORY_LABEL[category]:<{width}}{total:>6}")
            for s in stages:
                median = f"{human_duration(s.median)} ({s.stays})" if s.stays else "—"
                lines.append(
                    f"    {s.stage:<{width - 2}}{s.count:>6}{s.entered:>9}  {_share(s.converted, s.conversion):<24}"
                    f"{median:<18}{_share(s.lost, s.lost_share)}".rstrip()
                )
        for name, count in obj.unstaged.items():
            lines.append(f"  {name:<{width}}{count:>6}  (not a stage of the mapping)")
        if obj.overall is not None:
            lines.append(f"  {_overall_text(obj.overall)}")
    if funnels:
        lines.append("")
        lines.append(f"'entered': {ENTERED_NOTE[len('Each bar counts '):]}")
    return "\n".join(lines)


def _overall_text(overall: Overall) -> str:
    rate = f" ({overall.rate:.0%})" if overall.rate is not None else ""
    return (
        f"overall: {overall.succeeded} of {overall.entered} records that entered {overall.first_stage} "
        f"reached a succeeded stage{rate}"
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def to_json(funnels: list[ObjectFunnel], now: datetime) -> dict[str, Any]:
    return {
        "generated_at": _iso(now),
        "since": _iso(funnels[0].since) if funnels else None,
        "objects": [
            {
                "source": obj.source,
                "object": obj.object,
                "records": obj.records,
                "by_category": {c.value: sum(s.count for s in stages) for c, stages in obj.by_category()},
                "unstaged": obj.unstaged,
                "overall": None if obj.overall is None else {
                    "from_stage": obj.overall.first_stage,
                    "entered": obj.overall.entered,
                    "reached_succeeded": obj.overall.succeeded,
                    "conversion_rate": _round(obj.overall.rate),
                },
                "stages": [
                    {
                        "stage": s.stage,
                        "category": s.category.value,
                        "count": s.count,
                        "entered": s.entered,
                        "converted": s.converted,
                        "conversion_rate": _round(s.conversion),
                        "median_seconds_in_stage": None if s.median is None else round(s.median.total_seconds()),
                        "completed_stays": s.stays,
                        "lost": s.lost,
                        "lost_rate": _round(s.lost_share),
                    }
                    for _, stages in obj.by_category()
                    for s in stages
                ],
            }
            for obj in funnels
        ],
    }


CSV_COLUMNS = (
    "source", "object", "category", "stage", "count", "entered", "converted", "conversion_rate",
    "median_seconds_in_stage", "completed_stays", "lost", "lost_rate",
)


def to_rows(funnels: list[ObjectFunnel], now: datetime) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for obj in to_json(funnels, now)["objects"]:
        for s in obj["stages"]:
            rows.append([obj["source"], obj["object"], *("" if s[c] is None else s[c] for c in CSV_COLUMNS[2:])])
    return rows


# --- the chart -------------------------------------------------------------------------------------
COLORS = {Category.IN_PROGRESS: "#4C78A8", Category.SUCCEEDED: "#54A24B", Category.NOT_SUCCEEDED: "#BAB0AC"}


def _panel(ax: Any, obj: ObjectFunnel) -> None:
    """One object's funnel: a centred bar per stage (records that entered it), its rates to the right."""
    funnel_stages = [s for s in obj.stages if s.category is not Category.NOT_SUCCEEDED]
    lost_stages = [s for s in obj.stages if s.category is Category.NOT_SUCCEEDED]
    rows: list[tuple[float, StageFunnel]] = [(float(i), s) for i, s in enumerate(funnel_stages)]
    gap = 0.6 if funnel_stages and lost_stages else 0.0
    rows += [(len(funnel_stages) + gap + i, s) for i, s in enumerate(lost_stages)]
    widest = max([s.entered for _, s in rows] + [1])
    for y, s in rows:
        ax.barh(y, s.entered, left=-s.entered / 2, height=0.72, color=COLORS[s.category], edgecolor="white")
        inside = s.entered >= widest * 0.12
        ax.text(
            0 if inside else s.entered / 2 + widest * 0.02, y, f"{s.entered:,}", va="center",
            ha="center" if inside else "left", color="white" if inside else "#333333", fontsize=11, fontweight="bold",
        )
        notes = []
        if s.conversion is not None:
            notes.append(f"{s.conversion:.0%} reached a later stage")
        if s.lost_share is not None and s.lost:
            notes.append(f"{s.lost_share:.0%} lost")
        if s.median is not None:
            notes.append(f"median {human_duration(s.median)} in stage")
        ax.text(widest * 0.56, y, "  ·  ".join(notes), va="center", ha="left", fontsize=9.5, color="#333333")
    if gap:
        line = len(funnel_stages) - 0.5 + gap / 2
        ax.axhline(line, color="#DDDDDD", linewidth=1, linestyle="--")
        ax.text(widest * 1.6, line, "left the funnel", ha="right", va="bottom", fontsize=8.5, color="#999999")
    ax.set_yticks([y for y, _ in rows])
    ax.set_yticklabels([f"{s.stage}\n{s.count:,} now" for _, s in rows], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(-widest * 0.55, widest * 1.6)
    ax.set_xticks([])
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        f"{obj.source} · {obj.object} · {obj.period}", loc="left", fontsize=14, fontweight="bold", color="#222222",
        pad=22,
    )
    overall = f"  ·  {_overall_text(obj.overall)}" if obj.overall is not None else ""
    ax.text(
        0, 1.0, f"bars: records that entered each stage  ·  {obj.records:,} records now{overall}",
        transform=ax.transAxes, fontsize=9.5, color="#666666", va="bottom",
    )
    if not any(s.entered for _, s in rows):
        ax.text(0, (len(rows) - 1) / 2, "no stage changes in this period", ha="center", va="center", color="#777777")


def render_png(funnels: list[ObjectFunnel], path: Any) -> None:
    """A funnel chart per object, stacked, sized for a slide (matplotlib's Agg backend, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    heights = [0.55 * max(len(f.stages), 1) + 1.3 for f in funnels] or [2.0]
    figure = Figure(figsize=(11, sum(heights) + 0.6), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(len(funnels), 1), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, obj in zip(axes, funnels, strict=False):
        _panel(ax, obj)
    if not funnels:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no objects", ha="center", va="center")
    legend = [Patch(color=COLORS[c], label=CATEGORY_LABEL[c]) for c in CATEGORY_ORDER]
    # The note rides as the legend's title: constrained layout then keeps it clear of the legend and the bars.
    figure.legend(
        handles=legend, loc="outside lower center", ncols=3, frameon=False, fontsize=10,
        title=ENTERED_NOTE.replace(", so bars", ",\nso bars"), title_fontsize=8.5,
    )
    figure.savefig(path, format="png", facecolor="white")
