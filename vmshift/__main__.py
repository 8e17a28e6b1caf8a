from vmshift.cli import run

run()
