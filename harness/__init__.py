"""DL Rosetta: the same models, many frameworks and languages, one clock."""
