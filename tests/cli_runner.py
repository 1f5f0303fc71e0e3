"""One way for end-to-end tests to run the CLI in-process and insist that it succeeds."""

from __future__ import annotations

from medtrain.cli import run


def cli(*args: object) -> None:
    """Run ``medtrain <args>`` (each argument passed through ``str``) in this process; fail unless it exits 0."""
    code = run([str(arg) for arg in args])
    assert code == 0, f"medtrain {' '.join(map(str, args))} exited {code}"
