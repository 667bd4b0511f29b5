from mmedrag.cli.main import entry

entry()
