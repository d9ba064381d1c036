"""The example customer directory and the commented sample config, shipped inside the package as mailcase.examples; data only."""
