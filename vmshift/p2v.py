"""CLI for `vmshift p2v` (not built yet)."""

from vmshift.cliutil import not_built_command

p2v = not_built_command("p2v", 9, "Convert a physical machine's disks through the same pipeline.")
