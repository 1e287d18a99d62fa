"""How a count study is measured: one task, and one row, per mechanism."""

from __future__ import annotations

from typing import Any

from attnbench.kind import Kind, RunContext, Task, config_id
from attnbench.kinds._common import finish, message, table_text
from attnbench.registry import build_mechanism
from attnbench.worker import emit

PASS = "count"  # every row's pass: a count has no forward or backward


class CountKind(Kind):
    name = "count"
    unit = "mechanism"

    def columns(self, study: Any) -> dict[str, str]:
        return {
            "point_id": "hash of the mechanism, dim and num_heads: the resume key",
            "pass": PASS,
            "status": "ok | error",
            "error": "why the row failed; empty when ok",
            "mechanism": "registered mechanism name",
            "C": "channels",
            "num_heads": "attention heads",
            "params": "parameters (elements)",
            "timestamp": "UTC time the row was written",
        }

    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        return {"measure": ["params"], "dim": study.dim, "num_heads": study.num_heads}

    def tasks(self, ctx: RunContext) -> list[Task]:
        study = ctx.study
        return [
            Task(
                name,
                ((config_id({"kind": "count", "mechanism": name, **self.protocol(study, 1)}), PASS),),
                name,
            )
            for name in dict.fromkeys(study.mechanisms)
        ]

    def _row(self, ctx: RunContext, task: Task) -> dict[str, Any]:
        ((pid, pass_),) = task.rows
        return {
            "point_id": pid,
            "pass": pass_,
            "mechanism": task.payload,
            "C": ctx.study.dim,
            "num_heads": ctx.study.num_heads,
        }

    def measure(self, ctx: RunContext, task: Task) -> None:
        row = self._row(ctx, task)
        try:
            module = build_mechanism(task.payload, ctx.study.dim, ctx.study.num_heads)
        except Exception as exc:  # noqa: BLE001 - an error row, not a crash
            emit(("row", finish(row, "error", [message(exc)])))
            return
        row["params"] = sum(p.numel() for p in module.parameters())
        emit(("row", finish(row, "ok", [])))

    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        return [finish(self._row(ctx, task), "error", [message])]

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        return table_text(
            {"mechanism": [r["mechanism"] for r in rows], "params": [r.get("params") for r in rows]}
        )


KIND = CountKind()
