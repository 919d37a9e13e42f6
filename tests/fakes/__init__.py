"""In-process fakes of the hub's peers (see each module's docstring)."""
