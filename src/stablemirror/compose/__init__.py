"""The composition root: the one place that builds the app and what commands need."""
