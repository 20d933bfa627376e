"""Progress display for runs: epoch and batch bars on stderr (rich), or nothing at all."""
from __future__ import annotations

import contextlib


class RunProgress:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # On stderr: rich's default console is stdout, where `--format json` writes the record.
            # Redrawn twice a second (rich's default is 10): the parent shares the cores with the
            # worker it times, and at 10 Hz its redrawing cost 1 CPU-second a minute (bench/harness_overhead.py).
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), transient=False,
                                 console=Console(stderr=True), refresh_per_second=2)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    @contextlib.contextmanager
    def run(self, label: str, repeat: int, epochs: int):
        """Yields the callback that turns worker events into bar updates."""
        if self._bar is None:
            yield None
            return
        bar = self._bar
        task = bar.add_task(f"{label} #{repeat}", total=None, phase="starting")

        def on_event(kind: str, event: dict):
            if kind == "phase":
                name = event["name"]
                if name == "epoch":
                    steps = event["batches"]
                    bar.update(task, total=epochs * steps, completed=event["epoch"] * steps,
                               phase=f"epoch {event['epoch'] + 1}/{epochs}")
                else:
                    bar.update(task, phase=name)
            elif kind == "progress":
                bar.update(task, completed=event["epoch"] * event["of"] + event["batch"])
            elif kind == "epoch":
                bar.update(task, completed=(event["epoch"] + 1) * event["steps"])
            elif kind == "error":
                bar.update(task, phase=f"[red]failed: {event['type']}")

        yield on_event
        bar.update(task, phase="done" if bar.tasks[task].total else "finished")
