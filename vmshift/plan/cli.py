"""CLI for `vmshift plan` (not built yet)."""

from vmshift.cliutil import not_built_command

plan = not_built_command("plan", 8, "Validate, dry-run, run and resume CSV migration waves.")
