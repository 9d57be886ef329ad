"""`eventix`: the command line."""
