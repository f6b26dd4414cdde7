"""``python -m etl`` is ``vspc-etl``."""

from etl.cli import main

main(prog_name="vspc-etl")
