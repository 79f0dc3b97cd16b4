from sisr.cli import entry

entry()
