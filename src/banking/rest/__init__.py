"""The REST door (FastAPI): translates HTTP to calls on the core and the core's answers back."""
