"""Per-partner access policies (issue 4): data, deny by default, every decision with reasons.

Not built yet: this package holds its place in the layout. Nothing in the hub consults it
today; see docs/architecture.md for what is built.
"""
