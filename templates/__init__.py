"""The notice templates (Jinja2), shipped inside the package as mailcase.templates; data only."""
