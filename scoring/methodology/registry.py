"""The component registry: each composite component declared once, in SPEC §4 order.

An entry names the component's score column and weight setting, the expressions that
compute it, its further published values, its flag rules and its explain section.
Everything per component is derived from here:

- the scores (`provider_scores.score_providers`) and the `components` JSONB;
- r_raw (`composite.r_raw_expr`): the weighted sum in registry order;
- the flags (`flags.flags_expr`), in their rules' order;
- the published columns, the staging/upsert SQL (`db.publish`) and the columns `db init`
  adds to an existing table (`db.schema`);
- `claidex explain`'s component sections and the report's component summaries.

A new component is its module, its entry below, its weight setting (a `weight_*` field of
Settings; a component registered at run time may use `Settings.component_weights`) and
its columns in the table, which `claidex db init` adds (ALTER TABLE ... ADD COLUMN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.errors import ClaidexError
from scoring.methodology.components.billing import billing_provider_exprs
from scoring.methodology.components.concentration import concentration_exprs
from scoring.methodology.components.exclusion import exclusion_proximity_expr
from scoring.methodology.components.ownership import ownership_score_expr
from scoring.methodology.components.trajectory import trajectory_provider_exprs
from scoring.methodology.flags import (
    Flag,
    billing_flag,
    concentration_flag,
    exclusion_flag,
    growth_flag,
    ownership_flag,
)
from scoring.reports import explain_sections as ex

Section = Callable[[ex.ExplainContext], dict[str, Any]]
Lines = Callable[[dict[str, Any]], list[str]]
# Keys of explain's answer that are not component sections: a component's name is its key.
EXPLAIN_KEYS = frozenset(
    {"npi", "window", "peer_taxonomy", "peer_state", "years", "composite", "checks", "components"}
)


class RegistryError(ClaidexError):
    """A component without its weight setting, or one that clashes with another."""


@dataclass(frozen=True)
class Column:
    """A published value of a component and its type in provider_risk_scores."""

    name: str
    sql_type: str = "NUMERIC(6,2)"


@dataclass(frozen=True)
class Component:
    """One composite component.

    `exprs` compute its columns from the per-NPI frame (its `slots`: provider-year values
    by year, the provider's inputs joined, the columns of the components before it);
    they may also replace an input column (concentration nulls top_program).
    """

    name: str  # its explain section, the report's short name
    score: Column  # what its weight multiplies in r_raw
    weight: str  # a Settings field, else a key of Settings.component_weights
    exprs: Callable[[Settings], list[pl.Expr]]
    extras: tuple[Column, ...] = ()  # further published values, in `components` too
    slots: tuple[str, ...] = ()  # provider-year columns its exprs read per year slot (decay)
    flags: tuple[Flag, ...] = ()
    section: Section | None = None  # explain's section; None: its published values
    lines: Lines | None = None  # the section's lines; None: one line naming the values

    @property
    def columns(self) -> list[Column]:
        """Its published values: the score first."""
        return [self.score, *self.extras]

    def weight_of(self, cfg: Settings) -> float:
        if self.weight in type(cfg).model_fields:
            return float(getattr(cfg, self.weight))
        if self.weight in cfg.component_weights:
            return float(cfg.component_weights[self.weight])
        msg = (
            f"component {self.name}: no weight setting {self.weight!r} (a Settings field, or "
            f"a key of CLAIDEX_COMPONENT_WEIGHTS)"
        )
        raise RegistryError(msg)

    def explain(self, ctx: ex.ExplainContext) -> dict[str, Any]:
        """Its explain section, with the lines that state it."""
        names = [c.name for c in self.columns]
        section = self.section(ctx) if self.section else ex.generic_section(ctx, names)
        lines = self.lines(section) if self.lines else ex.generic_lines(self.name, names, section)
        return {**section, "lines": lines}


def _one(expr: Callable[[Settings], pl.Expr]) -> Callable[[Settings], list[pl.Expr]]:
    return lambda cfg: [expr(cfg)]


SPEC_COMPONENTS = (
    Component(
        name="billing",
        score=Column("billing_outlier_score"),
        weight="weight_billing",
        exprs=billing_provider_exprs,
        extras=(Column("billing_outlier_percentile"),),
        slots=("billing_year_score", "billing_pct_year"),
        flags=(Flag(10, billing_flag),),
        section=ex.billing_section,
        lines=ex.billing_lines,
    ),
    Component(
        name="ownership",
        score=Column("ownership_chain_risk"),
        weight="weight_ownership",
        exprs=_one(lambda _cfg: ownership_score_expr()),
        flags=(Flag(30, ownership_flag),),
        section=ex.ownership_section,
        lines=ex.ownership_lines,
    ),
    Component(
        name="trajectory",
        score=Column("payment_trajectory_score"),
        weight="weight_trajectory",
        exprs=trajectory_provider_exprs,
        extras=(Column("payment_trajectory_zscore", "NUMERIC(8,4)"),),
        slots=("growth_z",),
        flags=(Flag(20, growth_flag),),  # high billing and rapid growth
        section=ex.trajectory_section,
        lines=ex.trajectory_lines,
    ),
    Component(
        name="exclusion",
        score=Column("exclusion_proximity_score"),
        weight="weight_exclusion",
        exprs=_one(exclusion_proximity_expr),
        flags=(Flag(50, exclusion_flag),),
        section=ex.exclusion_section,
        lines=ex.exclusion_lines,
    ),
    Component(
        name="concentration",
        score=Column("program_concentration_score"),
        weight="weight_concentration",
        exprs=concentration_exprs,
        flags=(Flag(40, concentration_flag),),
        section=ex.concentration_section,
        lines=ex.concentration_lines,
    ),
)
_registered: list[Component] = list(SPEC_COMPONENTS)


def components() -> tuple[Component, ...]:
    """The registered components, in composite order."""
    return tuple(_registered)


@contextmanager
def registered(*extra: Component) -> Iterator[tuple[Component, ...]]:
    """Components added after the registered ones while the block runs (tests, tools).

    Every process that scores, merges or publishes a run must register the same
    components: in-process engines (the local engine with one worker) see them."""
    taken = {c.name for c in _registered} | set(EXPLAIN_KEYS)
    columns = {c.name for comp in _registered for c in comp.columns}
    for comp in extra:
        clash = {c.name for c in comp.columns} & columns
        if comp.name in taken or clash:
            msg = f"component {comp.name}: name or column(s) {sorted(clash)} already taken"
            raise RegistryError(msg)
        taken.add(comp.name)
        columns |= {c.name for c in comp.columns}
    before = list(_registered)
    _registered.extend(extra)
    try:
        yield components()
    finally:
        _registered[:] = before


def weights(cfg: Settings) -> dict[str, float]:
    """Composite weight per score column, in registry order (the r_raw sum's order)."""
    return {c.score.name: c.weight_of(cfg) for c in components()}


def value_columns() -> list[str]:
    """Every component's published values in registry order: the `components` JSONB."""
    return [column.name for c in components() for column in c.columns]


def sql_columns() -> dict[str, str]:
    """Published value -> its column type in provider_risk_scores."""
    return {column.name: column.sql_type for c in components() for column in c.columns}


def slot_columns() -> list[str]:
    """The provider-year columns spread over the year slots for the components' exprs."""
    return [slot for c in components() for slot in c.slots]


def flag_rules() -> list[Flag]:
    return [flag for c in components() for flag in c.flags]
